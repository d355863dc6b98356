#!/usr/bin/env bash
# Run the whole test suite (pytest, then mypy, the import layers and ruff) with one command.
#
# Meant for a fresh Debian 12 machine as root: installs what the tests need
# (Docker Engine, Debian's docker-compose, Podman, a static busybox, Prometheus,
# a Python venv), makes the Debian 13 root the Docker Engine 26.1 tests run from,
# starts a Docker daemon if none answers, and stops the daemon it started on exit. The Docker
# 26.1 daemon and the Podman service are started and stopped by the tests.
#
# Usage: bash tests/run-all.sh [pytest arguments...]
# Environment: VENV (default .venv, relative to the repository root), CI,
# DEBIAN_MIRROR (default: the first deb.debian.org-style URI in apt's sources),
# TEST_WORKERS (pytest-xdist processes; default: one more than the CPUs).
set -euo pipefail

# Work from the repository root so relative paths (.venv, pyproject) hold.
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
# Test files run in parallel, a file to a worker (module fixtures stay whole): most of the time
# goes to waiting on daemons, stable times and Prometheus, so one worker more than the CPUs.
TEST_WORKERS="${TEST_WORKERS:-$(($(nproc) + 1))}"
DOCKERD_LOG="${TMPDIR:-/tmp}/deployment-watcher-dockerd.log"
# dockerd's default pidfile: using it (rather than a private one) makes a
# second dockerd refuse to start while another one is still alive.
DOCKERD_PIDFILE=/var/run/docker.pid
DOCKERD_PID=""  # set only when this script started dockerd
APT_UPDATED=0
# Debian 13 with its docker.io (Docker Engine 26.1): tests/engines.py runs its
# dockerd. A cache: made once per machine, kept across runs.
TRIXIE_ROOT=/var/cache/deployment-watcher-tests/trixie

header() { printf '\n=== %s\n' "$*"; }
die() { printf 'run-all.sh: error: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# --- System packages --------------------------------------------------------

apt_install() {
    is_root || die "missing system packages ($*); rerun as root or install them yourself"
    # One `apt-get update` per run is enough, however many installs follow.
    if ((!APT_UPDATED)); then
        apt-get update
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# The tests build their busybox image from /bin/busybox, which works only
# with the static build (a dynamic one would need a libc inside the image).
have_static_busybox() {
    [[ -x /bin/busybox ]] || return 1
    # ldd fails ("not a dynamic executable") exactly when the binary is static.
    ! ldd /bin/busybox >/dev/null 2>&1
}

install_system_packages() {
    local missing=() cmd
    for cmd in dockerd docker docker-compose podman prometheus promtool prometheus-alertmanager amtool debootstrap chromium; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    have_static_busybox || missing+=("static /bin/busybox")
    if ((${#missing[@]})); then
        echo "missing: ${missing[*]}"
        # Debian's prometheus package may start its own service; that does not
        # disturb the tests, so it is left alone.
        # debootstrap makes the local Debian base the image test builds on, and
        # the Debian 13 root of Docker Engine 26.1.
        # docker-compose: Debian 12's Compose (1.29), which docs/getting-started.md offers and
        # tests/e2e/test_compose_files.py checks the compose files with.
        # prometheus-alertmanager brings amtool too (the fleet e2e test and config checks);
        # chromium: the board's browser tests drive Debian's build through Playwright (from
        # the test extra), which never downloads a browser.
        apt_install docker.io docker-compose podman busybox-static prometheus prometheus-alertmanager debootstrap chromium
    else
        echo "docker, docker-compose, podman, busybox, prometheus, alertmanager, debootstrap, chromium: already installed"
    fi
}

# --- Docker Engine 26.1 (Debian 13's docker.io) -------------------------------

# The mirror apt already uses (its deb822 or one-line sources), so that a
# machine with a local mirror or proxy needs nothing more.
debian_mirror() {
    local uri
    uri=$(grep -rhoE '^(URIs:|deb)( +\[[^]]*\])? +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null |
        grep -oE 'https?://[^ ]+' | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# A Debian 13 root with docker.io in it, made once (about a minute) and kept.
# Made in a temporary directory and renamed, so an interrupted run leaves no
# half-made root behind.
ensure_trixie_root() {
    local mirror partial="$TRIXIE_ROOT.partial"
    if [[ -x $TRIXIE_ROOT/usr/sbin/dockerd ]]; then
        echo "using $TRIXIE_ROOT"
        return 0
    fi
    is_root || die "making the Debian 13 root at $TRIXIE_ROOT needs root"
    mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
    echo "making $TRIXIE_ROOT (debootstrap trixie from $mirror)"
    rm -rf "$partial"
    mkdir -p "$(dirname "$TRIXIE_ROOT")"
    debootstrap --variant=minbase --include=docker.io trixie "$partial" "$mirror"
    mv "$partial" "$TRIXIE_ROOT"
}

# --- Python -----------------------------------------------------------------

create_venv() {
    # A fresh Debian 12 has no python3 at all (e.g. the debian:12 image).
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    if [[ -x $VENV/bin/pip ]]; then
        return 0
    fi
    # Without Debian's python3-venv (ensurepip) venv creation fails half-way;
    # re-running `python3 -m venv` on the same directory completes it.
    if ! python3 -m venv "$VENV"; then
        echo "python3 -m venv failed; installing python3-venv and retrying"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
}

install_python_deps() {
    create_venv
    "$VENV/bin/pip" install -q -e '.[test]'
}

# axe-core, injected into Chromium by the board's accessibility checks (tests/e2e/package.json, its
# lock file pinning the version). Under CI=true a failure here fails the run: the check never skips.
install_node_deps() {
    command -v npm >/dev/null 2>&1 || apt_install npm
    if [[ -f tests/e2e/node_modules/axe-core/axe.min.js ]] && [[ tests/e2e/node_modules/.package-lock.json -nt tests/e2e/package-lock.json ]]; then
        echo "axe-core: already installed"
        return 0
    fi
    npm ci --prefix tests/e2e --no-audit --no-fund ||
        die "npm ci in tests/e2e failed (axe-core for the board's accessibility checks)"
}

# --- Docker Engine ----------------------------------------------------------

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

# A daemon that died without cleaning up leaves its pidfile behind, and
# dockerd then refuses to start. Remove it unless its pid is a live dockerd.
remove_stale_dockerd_pidfile() {
    local pid comm=""
    [[ -f $DOCKERD_PIDFILE ]] || return 0
    pid=$(<"$DOCKERD_PIDFILE")
    if [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/comm ]]; then
        comm=$(<"/proc/$pid/comm")
    fi
    if [[ $comm == dockerd ]]; then
        return 0  # alive: dockerd will refuse to start and we report why
    fi
    echo "removing stale $DOCKERD_PIDFILE (pid ${pid:-?} is not a running dockerd)"
    rm -f "$DOCKERD_PIDFILE"
}

# EXIT trap: stop the daemon this script started, and only that one.
stop_dockerd() {
    local pid=$DOCKERD_PID i
    [[ -n $pid ]] || return 0
    DOCKERD_PID=""
    header "Stopping the Docker daemon started by this script (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    # dockerd shuts its containers down on SIGTERM; give it time to do so.
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "dockerd did not stop within 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true  # reap it; its exit status is irrelevant
}

start_dockerd() {
    is_root || die "no Docker Engine answers and starting dockerd needs root"
    remove_stale_dockerd_pidfile
    echo "starting dockerd (log: $DOCKERD_LOG)"
    # --iptables=false: containers often lack the netfilter privileges, and
    # the tests need no published ports.
    dockerd --iptables=false --pidfile "$DOCKERD_PIDFILE" >"$DOCKERD_LOG" 2>&1 &
    DOCKERD_PID=$!
    trap stop_dockerd EXIT

    local deadline=$((SECONDS + 60))
    until docker_answers; do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            DOCKERD_PID=""  # nothing left for the EXIT trap to stop
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited during startup (log above)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within 60 s (log above)"
        fi
        sleep 1
    done
    echo "dockerd is up (pid $DOCKERD_PID)"
}

ensure_docker() {
    if docker_answers; then
        echo "using the running Docker Engine"
    else
        start_dockerd
    fi
}

# --- Checks -----------------------------------------------------------------

# Run every check even if an earlier one fails, so one run reports them all.
run_checks() {
    local failed=()

    header "pytest $* ($TEST_WORKERS workers)"
    # --durations: the slowest tests in the log, to keep the run within its time budget.
    CI="${CI:-}" "$VENV/bin/python" -m pytest -p no:cacheprovider -n "$TEST_WORKERS" --dist loadfile \
        --durations=20 "$@" || failed+=(pytest)

    header "mypy"
    "$VENV/bin/mypy" || failed+=(mypy)

    header "lint-imports (the layers in .importlinter)"
    "$VENV/bin/lint-imports" || failed+=(lint-imports)

    header "ruff check ."
    "$VENV/bin/ruff" check . || failed+=(ruff)

    if ((${#failed[@]})); then
        header "FAILED: ${failed[*]}"
        return 1
    fi
    header "all checks passed"
}

main() {
    # Turn Ctrl-C / SIGTERM into a normal exit so the EXIT trap stops dockerd.
    trap 'exit 130' INT
    trap 'exit 143' TERM

    header "System packages"
    install_system_packages
    header "Python environment ($VENV)"
    install_python_deps
    header "Node packages for the browser tests (tests/e2e)"
    install_node_deps
    header "Docker Engine"
    ensure_docker
    header "Docker Engine 26.1 root ($TRIXIE_ROOT)"
    ensure_trixie_root
    run_checks "$@"
}

main "$@"
