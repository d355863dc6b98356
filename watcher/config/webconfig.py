"""The web configuration file of Prometheus exporters: TLS, basic auth users, response headers.

The format is exporter-toolkit's (``--web.config.file``), described in
https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md, so one
file serves the watcher and the exporters next to it. Paths in it are relative to the file's
directory. Loading checks everything (YAML, keys, certificates, keys, CAs, password hashes)
and reports every problem at once. Parts of the format this implementation leaves out are
refused by name rather than silently ignored.

Only the standard library and YAML here: the container's HEALTHCHECK imports this module every
few seconds.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher.config import yamlfile
from watcher.config.problems import ConfigError

# client_auth_type → how the TLS server treats client certificates.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Why a basic auth check failed, as counted in deployment_watcher_auth_failures_total{reason}.
FAILURES = ("missing", "malformed", "invalid")
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's cipher suite names (crypto/tls.CipherSuites) → OpenSSL's. TLS 1.3 suites cannot be
# restricted, in Go or OpenSSL: they are accepted and always on.
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Headers the format allows, with their allowed values (empty: any).
HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
}
BCRYPT_HINT = "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
_BCRYPT = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")

_TOP = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
        "cipher_suites", "prefer_server_cipher_suites")  # fmt: skip
_HTTP = ("headers", "http2")
_UNSUPPORTED = {
    "rate_limit": "put a reverse proxy in front to limit request rates",
    "tls_server_config.cert": "inline certificates are not read; use cert_file",
    "tls_server_config.key": "inline keys are not read; use key_file",
    "tls_server_config.client_ca": "inline CAs are not read; use client_ca_file",
    "tls_server_config.client_allowed_sans": "restrict clients by the CA in client_ca_file instead",
    "tls_server_config.curve_preferences": "Python's ssl module cannot set a list of curves",
}
# Go asks for these certificates without verifying them; Python's ssl module verifies every
# client certificate it asks for, so the two cannot be honoured.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """What a web config file asks for; the defaults are plain HTTP without authentication."""

    tls: ssl.SSLContext | None = None
    client_cert_required: bool = False
    users: Mapping[str, bytes] = field(default_factory=dict)  # username → bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)


class WebConfigError(ConfigError):
    """All problems found in one web config file, one per line."""


def load(path: str) -> WebConfig:
    """Read and check the web config file at ``path``; raises WebConfigError listing every problem."""
    problems: list[str] = []
    document = _section(yamlfile.read(path, problems), "", _TOP, problems)
    base = Path(path).parent
    tls, client_cert_required = _tls(_section(document.get("tls_server_config"), "tls_server_config", _TLS, problems),
                                     base, problems)  # fmt: skip
    http = _section(document.get("http_server_config"), "http_server_config", _HTTP, problems)
    headers = _headers(http.get("headers"), problems)
    if "http2" in http and not isinstance(http["http2"], bool):
        problems.append("http_server_config.http2 must be true or false")
    users = _users(document.get("basic_auth_users"), problems)
    if problems:
        raise WebConfigError([f"web config file {path}: {problem}" for problem in problems])
    return WebConfig(tls=tls, client_cert_required=client_cert_required, users=users, headers=headers)


def _section(value: object, where: str, known: tuple[str, ...], problems: list[str]) -> dict[str, object]:
    """The known keys of a mapping (absent or empty: none); unknown and unsupported keys are problems."""
    found: dict[str, object] = {}
    for key, item in _mapping(value, f"{where or 'the top level'} must be a mapping", problems).items():
        name = f"{where}.{key}" if where else str(key)
        if name in _UNSUPPORTED:
            problems.append(f"{name} is not supported by deployment-watcher: {_UNSUPPORTED[name]}")
        elif key not in known:
            problems.append(f"unknown key {name}")
        else:
            found[str(key)] = item
    return found


def _mapping(value: object, problem: str, problems: list[str]) -> Mapping[Any, Any]:
    """``value`` when it is a mapping; absent, an empty one; anything else is ``problem``, and empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(problem)
        return {}
    return value


# A type check of a YAML value, not watcher.domain.text's cleaning: these strings are paths and
# names, never shown as label values.
def _text(section: Mapping[str, object], key: str, problems: list[str]) -> str:
    value = section.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"tls_server_config.{key} must be a string")
        return ""
    return value


def _file(base: Path, key: str, name: str, problems: list[str]) -> tuple[Path, str]:
    """The path of a file named in the config, and its text ("" when unreadable: a problem)."""
    path = base / name
    try:
        return path, path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        problems.append(f"tls_server_config.{key} {path}: {exc.strerror or exc}")
        return path, ""


def _tls(section: Mapping[str, object], base: Path, problems: list[str]) -> tuple[ssl.SSLContext | None, bool]:
    """A server SSLContext, and whether it requires client certificates; (None, False) without TLS."""
    if not section:
        return None, False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key in ("cert_file", "key_file"):
        if not section.get(key):
            problems.append(f"tls_server_config.{key} is required")
    _load_pair(context, base, _text(section, "cert_file", problems), _text(section, "key_file", problems), problems)

    auth = _text(section, "client_auth_type", problems) or "NoClientCert"
    ca_file = _text(section, "client_ca_file", problems)
    if auth in _UNVERIFIED_CLIENT_AUTH:
        problems.append(f"tls_server_config.client_auth_type {auth} is not supported: Python's ssl module verifies "
                        "every client certificate it asks for; use VerifyClientCertIfGiven or "
                        "RequireAndVerifyClientCert with client_ca_file")  # fmt: skip
    elif auth not in CLIENT_AUTH:
        problems.append(f"tls_server_config.client_auth_type must be one of {', '.join(CLIENT_AUTH)}, got {auth!r}")
    elif CLIENT_AUTH[auth] == ssl.CERT_NONE and ca_file:
        problems.append("tls_server_config.client_ca_file is set but client_auth_type is NoClientCert: "
                        "set client_auth_type to RequireAndVerifyClientCert")  # fmt: skip
    elif CLIENT_AUTH[auth] != ssl.CERT_NONE and not ca_file:
        problems.append(f"tls_server_config.client_auth_type {auth} needs client_ca_file, the CA that signs "
                        "the client certificates")  # fmt: skip
    else:
        context.verify_mode = CLIENT_AUTH[auth]
    if ca_file:
        path, text = _file(base, "client_ca_file", ca_file, problems)
        if text:
            try:
                context.load_verify_locations(cafile=path)
            except ssl.SSLError as exc:
                problems.append(f"tls_server_config.client_ca_file {path}: no usable PEM certificate in it ({exc})")

    versions = []
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = _text(section, key, problems) or default
        if name not in TLS_VERSIONS:
            problems.append(f"tls_server_config.{key} must be TLS12 or TLS13 (older versions are insecure and "
                            f"refused by OpenSSL 3), got {name!r}")  # fmt: skip
        versions.append(TLS_VERSIONS.get(name))
    low, high = versions
    if low is not None and high is not None:
        if low > high:
            problems.append("tls_server_config.min_version is above max_version")
        else:
            context.minimum_version, context.maximum_version = low, high

    _ciphers(context, section.get("cipher_suites"), problems)
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        problems.append("tls_server_config.prefer_server_cipher_suites must be true or false")
    elif prefer:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context, context.verify_mode == ssl.CERT_REQUIRED


def _load_pair(context: ssl.SSLContext, base: Path, cert_file: str, key_file: str, problems: list[str]) -> None:
    cert_path, cert_text = _file(base, "cert_file", cert_file, problems) if cert_file else (base, "")
    key_path, key_text = _file(base, "key_file", key_file, problems) if key_file else (base, "")
    pair = bool(cert_text and key_text)
    if cert_text and "-----BEGIN CERTIFICATE-----" not in cert_text:
        problems.append(f"tls_server_config.cert_file {cert_path}: no PEM certificate in it")
        pair = False
    if key_text and "PRIVATE KEY-----" not in key_text:
        problems.append(f"tls_server_config.key_file {key_path}: no PEM private key in it")
        pair = False
    elif "ENCRYPTED" in key_text:
        problems.append(f"tls_server_config.key_file {key_path}: the key is encrypted; give an unencrypted key")
        pair = False
    if pair:
        try:
            # A password (never used: encrypted keys are refused above) keeps OpenSSL from prompting on a tty.
            context.load_cert_chain(cert_path, key_path, password=b"")
        except ssl.SSLError as exc:
            problems.append(f"tls_server_config: cert_file {cert_path} and key_file {key_path} do not make a "
                            f"certificate and its key: {exc}")  # fmt: skip


def _ciphers(context: ssl.SSLContext, value: object, problems: list[str]) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        problems.append("tls_server_config.cipher_suites must be a list of cipher suite names")
        return
    unknown = [name for name in value if name not in CIPHER_SUITES]
    if unknown:
        problems.append(f"tls_server_config.cipher_suites: unknown {', '.join(unknown)} "
                        f"(known: {', '.join(CIPHER_SUITES)})")  # fmt: skip
        return
    tls12 = [name for name in (CIPHER_SUITES[suite] for suite in value) if name]
    if not tls12:
        problems.append("tls_server_config.cipher_suites lists only TLS 1.3 suites, which are always on; "
                        "list TLS 1.2 suites, or set min_version: TLS13")  # fmt: skip
        return
    context.set_ciphers(":".join(tls12))


def _headers(value: object, problems: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    mapping = _mapping(value, "http_server_config.headers must be a mapping of header names to values", problems)
    for name, text in mapping.items():
        allowed = HEADERS.get(name)
        if allowed is None:
            problems.append(f"http_server_config.headers: {name} cannot be set (allowed: {', '.join(HEADERS)})")
        elif not isinstance(text, str):
            problems.append(f"http_server_config.headers.{name} must be a string")
        elif allowed and text not in allowed:
            problems.append(f"http_server_config.headers.{name} must be one of {', '.join(allowed)}, got {text!r}")
        elif text:  # blank: unset, as in exporter-toolkit
            headers[name] = text
    return headers


def _users(value: object, problems: list[str]) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    mapping = _mapping(value, "basic_auth_users must be a mapping of usernames to bcrypt hashes", problems)
    for name, hashed in mapping.items():
        user = str(name)
        match = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
        if ":" in user:
            problems.append(f"basic_auth_users: {user!r} can never log in: basic auth usernames cannot contain ':'")
        # The hash is not echoed: it is a secret in the format.
        elif match is None:
            problems.append(f"basic_auth_users.{user}: not a bcrypt hash ({BCRYPT_HINT})")
        elif not 4 <= int(match.group(1)) <= 31:
            problems.append(f"basic_auth_users.{user}: bcrypt cost must be 4 to 31, got {match.group(1)}")
        else:
            users[user] = hashed.encode()
    return users
