# deployment-watcher container image.
#
#   docker build -t deployment-watcher .
#   docker build --build-arg WHEELHOUSE=build/wheelhouse -t deployment-watcher .   # offline
#
# BASE_IMAGE must provide `python3` (>= 3.11) with the venv module; any Debian-like image
# works (python:3.12-slim, or debian:bookworm with python3 and python3-venv installed).
#
# WHEELHOUSE, when set, is a directory inside the build context holding wheels for the
# project's dependencies *and* its build backend (setuptools>=68), for the base image's
# Python and platform; the build then uses no package index at all, e.g. on the host:
#   pip wheel --wheel-dir build/wheelhouse . 'setuptools>=68'
# When empty (the default), dependencies come from PyPI.
#
# Running it: the watcher only reads the Docker socket, so mount it read-only and give the
# non-root user the socket's group (the host's docker group id) instead of running as root:
#   docker run -d -p 9102:9102 \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro \
#     --group-add "$(stat -c %g /var/run/docker.sock)" deployment-watcher
# (in compose: `group_add: ["${DOCKER_GID}"]`, see deploy/docker-compose.yml).
# The state file (revisions, rollback counts, history) lives in the volume
# /var/lib/deployment-watcher (set explicitly below, rather than left to storage.directory's
# `auto`): give it a named volume to keep it across container replacement,
#   -v deployment-watcher-data:/var/lib/deployment-watcher
# Configuration comes from WATCHER_<SECTION>_<FIELD> environment variables, flags after the
# image name, or a mounted YAML file (WATCHER_CONFIG_FILE).

ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG WHEELHOUSE=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# `python3`, not `python`: Debian's interpreter has no `python` command.
RUN python3 -m venv /opt/watcher
COPY . /src
WORKDIR /src
RUN set -eu; \
    if [ -n "${WHEELHOUSE}" ]; then \
        [ -d "/src/${WHEELHOUSE}" ] || { echo "WHEELHOUSE=${WHEELHOUSE} is not a directory in the build context" >&2; exit 1; }; \
        set -- --no-index --find-links "/src/${WHEELHOUSE}"; \
    fi; \
    /opt/watcher/bin/pip wheel "$@" --wheel-dir /tmp/wheels /src; \
    /opt/watcher/bin/pip install "$@" --no-index --find-links /tmp/wheels deployment-watcher; \
    /opt/watcher/bin/deployment-watcher --version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="deployment-watcher" \
      org.opencontainers.image.description="Watch Docker deployments and serve them as Prometheus metrics" \
      org.opencontainers.image.source="https://github.com/example/deployment-watcher" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# Non-root user; socket access comes from --group-add / group_add (see the top of this file).
RUN groupadd --gid 10001 watcher \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin watcher \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/deployment-watcher

COPY --from=build /opt/watcher /opt/watcher
ENV PATH=/opt/watcher/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WATCHER_STORAGE_DIRECTORY=/var/lib/deployment-watcher
# Declared after the chown: a new volume starts with the directory's owner (uid 10001).
VOLUME ["/var/lib/deployment-watcher"]

EXPOSE 9102
# No curl in slim images: ask /health with the venv's Python. The probe finds the port and the
# web config (https, see docs/security.md) in WATCHER_* variables and
# WATCHER_CONFIG_FILE; it cannot see flags given after the image name.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/opt/watcher/bin/python", "-m", "watcher.clients.healthcheck"]

USER watcher
ENTRYPOINT ["deployment-watcher"]
