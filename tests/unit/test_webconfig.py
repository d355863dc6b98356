"""The web config file (exporter-toolkit's format): what it accepts, and every way it is refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.pki import Pki, make_pki
from tests.unit.builders import UNREADABLE
from watcher import cli, config
from watcher.config import ConfigError, webconfig
from watcher.config.webconfig import WebConfig, WebConfigError

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
GOOD_TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def write(directory: Path, text: str, name: str = "web.yml") -> str:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems_of(path: str) -> list[str]:
    with pytest.raises(WebConfigError) as caught:
        webconfig.load(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    assert all(problem.startswith(f"web config file {path}: ") for problem in caught.value.problems)
    return caught.value.problems


# --- accepted -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# nothing\n", "tls_server_config:\nbasic_auth_users: {}\n"])
def test_empty_file_is_plain_http_without_auth(tmp_path: Path, text: str) -> None:
    """An empty file, or empty sections, mean plain HTTP and no users, as in exporter-toolkit."""
    loaded = webconfig.load(write(tmp_path, text))
    assert loaded == WebConfig(tls=None, client_cert_required=False, users={}, headers={})


def test_full_config(pki: Pki) -> None:
    """TLS with required client certificates, TLS 1.3 only, users and headers: all of it is read."""
    text = f"""
tls_server_config:
  cert_file: {pki.server_cert.name}
  key_file: {pki.server_key.name}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {pki.ca.name}
  min_version: TLS13
  max_version: TLS13
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
    X-XSS-Protection: ""
basic_auth_users:
  alice: {HASH}
  "1234": {HASH}
"""
    loaded = webconfig.load(write(pki.ca.parent, text))
    assert loaded.tls is not None
    assert loaded.tls.verify_mode == ssl.CERT_REQUIRED
    assert loaded.client_cert_required
    assert loaded.tls.minimum_version == loaded.tls.maximum_version == ssl.TLSVersion.TLSv1_3
    assert loaded.tls.cert_store_stats()["x509_ca"] == 1
    assert loaded.users == {"alice": HASH.encode(), "1234": HASH.encode()}
    assert loaded.headers == {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff",
                              "Strict-Transport-Security": "max-age=31536000"}  # fmt: skip


def test_defaults_of_tls(pki: Pki) -> None:
    """Only a certificate and key: TLS 1.2 to 1.3, no client certificates, server cipher order."""
    loaded = webconfig.load(write(pki.ca.parent, GOOD_TLS))
    assert loaded.tls is not None
    assert loaded.tls.verify_mode == ssl.CERT_NONE
    assert not loaded.client_cert_required
    assert (loaded.tls.minimum_version, loaded.tls.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert loaded.tls.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_paths_are_relative_to_the_file(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cert_file, key_file and client_ca_file are found next to the config file, whatever the working directory."""
    monkeypatch.chdir(tmp_path)
    text = GOOD_TLS + f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.ca.name}\n"
    loaded = webconfig.load(write(pki.ca.parent, text, name="relative.yml"))
    assert loaded.tls is not None and loaded.tls.verify_mode == ssl.CERT_OPTIONAL
    assert not loaded.client_cert_required


def test_absolute_paths(pki: Pki, tmp_path: Path) -> None:
    """Absolute paths are taken as they are."""
    text = f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
    assert webconfig.load(write(tmp_path, text)).tls is not None


def test_cipher_suites_by_go_names(pki: Pki) -> None:
    """Go's suite names pick OpenSSL's TLS 1.2 ciphers; TLS 1.3 suites stay on; server preference can be off."""
    text = GOOD_TLS + ("  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
                       "  prefer_server_cipher_suites: false\n")  # fmt: skip
    loaded = webconfig.load(write(pki.ca.parent, text))
    assert loaded.tls is not None
    tls12 = {c["name"] for c in loaded.tls.get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert any(c["protocol"] == "TLSv1.3" for c in loaded.tls.get_ciphers())
    assert not loaded.tls.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_every_go_cipher_suite_exists_in_openssl() -> None:
    """Each OpenSSL name of the table is a cipher this OpenSSL knows."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for go_name, openssl_name in webconfig.CIPHER_SUITES.items():
        if openssl_name:
            context.set_ciphers(openssl_name)
            assert [c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"] == [openssl_name], go_name


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_variants(tmp_path: Path, prefix: str) -> None:
    """Hashes from htpasswd ($2y$), Go and Python ($2a$, $2b$) are all accepted."""
    hashed = prefix + HASH[4:]
    assert webconfig.load(write(tmp_path, f"basic_auth_users:\n  bob: {hashed}\n")).users == {"bob": hashed.encode()}


# --- refused ------------------------------------------------------------------------

ENCRYPTED_KEY = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"

REFUSED = [
    # (name, config text ({dir} is the PKI's directory), what the one problem says)
    ("not yaml", "a: [b\n", "not valid YAML"),
    ("junk", "hWkNKCp3fvIx3jKnsaBI\nTuEjdwNS8A2vYdFbiKqr\n", "the top level must be a mapping"),
    ("list", "- tls_server_config\n", "the top level must be a mapping"),
    ("unknown top key", "tls_config: {}\n", "unknown key tls_config"),
    ("rate limit", "rate_limit:\n  burst: 1\n", "rate_limit is not supported"),
    ("tls not mapping", "tls_server_config: yes\n", "tls_server_config must be a mapping"),
    ("unknown tls key", GOOD_TLS + "  cert_filse: server.crt\n", "unknown key tls_server_config.cert_filse"),
    ("inline cert", "tls_server_config:\n  cert: x\n  key_file: server.key\n  cert_file: server.crt\n",
     "tls_server_config.cert is not supported"),
    ("inline key", GOOD_TLS + "  key: x\n", "tls_server_config.key is not supported"),
    ("inline ca", GOOD_TLS + "  client_ca: x\n", "tls_server_config.client_ca is not supported"),
    ("sans", GOOD_TLS + "  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans is not supported"),
    ("curves", GOOD_TLS + "  curve_preferences: [X25519]\n", "tls_server_config.curve_preferences is not supported"),
    ("no cert", "tls_server_config:\n  key_file: server.key\n", "tls_server_config.cert_file is required"),
    ("no key", "tls_server_config:\n  cert_file: server.crt\n", "tls_server_config.key_file is required"),
    ("cert not text", "tls_server_config:\n  cert_file: [a]\n  key_file: server.key\n",
     "tls_server_config.cert_file must be a string"),
    ("missing cert", "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
     "nope.crt: No such file or directory"),
    ("missing key", "tls_server_config:\n  cert_file: server.crt\n  key_file: nope.key\n",
     "nope.key: No such file or directory"),
    ("cert is a directory", "tls_server_config:\n  cert_file: .\n  key_file: server.key\n", "Is a directory"),
    ("cert not pem", "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n",
     "server.key: no PEM certificate in it"),
    ("key not pem", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n",
     "server.crt: no PEM private key in it"),
    ("encrypted key", "tls_server_config:\n  cert_file: server.crt\n  key_file: encrypted.key\n",
     "the key is encrypted"),
    ("key of another cert", "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
     "do not make a certificate and its key"),
    ("bad client auth", GOOD_TLS + "  client_auth_type: Always\n",
     "client_auth_type must be one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"),
    ("request cert", GOOD_TLS + "  client_auth_type: RequestClientCert\n",
     "client_auth_type RequestClientCert is not supported"),
    ("require any cert", GOOD_TLS + "  client_auth_type: RequireAnyClientCert\n",
     "client_auth_type RequireAnyClientCert is not supported"),
    ("ca without policy", GOOD_TLS + "  client_ca_file: ca.crt\n",
     "client_ca_file is set but client_auth_type is NoClientCert"),
    ("policy without ca", GOOD_TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
     "RequireAndVerifyClientCert needs client_ca_file"),
    ("ca missing", GOOD_TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope.crt\n",
     "nope.crt: No such file or directory"),
    ("ca not pem", GOOD_TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.key\n",
     "no usable PEM certificate in it"),
    ("unknown version", GOOD_TLS + "  min_version: TLS111\n", "min_version must be TLS12 or TLS13"),
    ("old version", GOOD_TLS + "  min_version: TLS10\n", "min_version must be TLS12 or TLS13"),
    ("max below min", GOOD_TLS + "  min_version: TLS13\n  max_version: TLS12\n", "min_version is above max_version"),
    ("unknown cipher", GOOD_TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
     "cipher_suites: unknown TLS_RSA_WITH_RC4_128_SHA"),
    ("ciphers not a list", GOOD_TLS + "  cipher_suites: TLS_AES_128_GCM_SHA256\n", "cipher_suites must be a list"),
    ("only tls13 ciphers", GOOD_TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "lists only TLS 1.3 suites"),
    ("prefer not bool", GOOD_TLS + "  prefer_server_cipher_suites: maybe\n",
     "prefer_server_cipher_suites must be true or false"),
    ("http not mapping", "http_server_config: []\n", "http_server_config must be a mapping"),
    ("unknown http key", "http_server_config:\n  gzip: true\n", "unknown key http_server_config.gzip"),
    ("http2 not bool", "http_server_config:\n  http2: sometimes\n", "http2 must be true or false"),
    ("headers not mapping", "http_server_config:\n  headers: [a]\n", "headers must be a mapping"),
    ("extra header", "http_server_config:\n  headers:\n    X-Powered-By: me\n", "X-Powered-By cannot be set"),
    ("bad frame options", "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
     "X-Frame-Options must be one of deny, sameorigin, got 'allow'"),
    ("bad content type options", "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
     "X-Content-Type-Options must be one of nosniff"),
    ("header not text", "http_server_config:\n  headers:\n    X-XSS-Protection: {a: 1}\n",
     "headers.X-XSS-Protection must be a string"),
    ("users not mapping", "basic_auth_users: [alice]\n", "basic_auth_users must be a mapping"),
    ("plain password", "basic_auth_users:\n  john: doe\n", "basic_auth_users.john: not a bcrypt hash"),
    ("hash not text", "basic_auth_users:\n  john: 12\n", "basic_auth_users.john: not a bcrypt hash"),
    ("low cost", f"basic_auth_users:\n  john: $2y$03${HASH[7:]}\n", "bcrypt cost must be 4 to 31, got 03"),
    ("high cost", f"basic_auth_users:\n  john: $2y$32${HASH[7:]}\n", "bcrypt cost must be 4 to 31, got 32"),
    ("colon in user", f'basic_auth_users:\n  "a:b": {HASH}\n', "'a:b' can never log in"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "needle"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_refused(pki: Pki, text: str, needle: str) -> None:
    """Each bad config gives exactly one problem, which says what is wrong."""
    (pki.ca.parent / "encrypted.key").write_text(ENCRYPTED_KEY)
    problems = problems_of(write(pki.ca.parent, text, name="refused.yml"))
    assert len(problems) == 1, problems
    assert needle in problems[0], problems


def test_tls_section_without_certificate(tmp_path: Path) -> None:
    """A TLS section with settings but no certificate is refused, not taken as plain HTTP."""
    problems = problems_of(write(tmp_path, "tls_server_config:\n  min_version: TLS13\n"))
    assert len(problems) == 2 and "cert_file is required" in problems[0] and "key_file is required" in problems[1]


def test_missing_file(tmp_path: Path) -> None:
    """A web config file that does not exist is a problem, not plain HTTP."""
    assert problems_of(str(tmp_path / "nope.yml")) == [
        f"web config file {tmp_path / 'nope.yml'}: No such file or directory"
    ]


@pytest.mark.parametrize(("content", "problem"), UNREADABLE)
def test_unreadable_file_is_one_problem(tmp_path: Path, content: bytes, problem: str) -> None:
    """A web config file that is not UTF-8, or nests deeper than PyYAML recurses, is one problem, as the config file."""
    path = tmp_path / "web.yml"
    path.write_bytes(content)
    assert problems_of(str(path)) == [f"web config file {path}: {problem}"]
    with pytest.raises(ConfigError) as caught:
        config.load(environ={}, flags={"web.config_file": str(path)})
    assert caught.value.problems == [f"web.config_file: web config file {path}: {problem}"]


def test_hash_is_not_echoed(tmp_path: Path) -> None:
    """A bad hash is a secret all the same: the problem names the user, not the value."""
    problems = problems_of(write(tmp_path, "basic_auth_users:\n  john: s3cr3t-plaintext\n"))
    assert "s3cr3t" not in problems[0]


def test_every_problem_at_once(pki: Pki) -> None:
    """Problems in every section are reported together."""
    text = """
tls_server_config:
  cert_file: nope.crt
  key_file: server.key
  client_auth_type: RequireAnyClientCert
  min_version: SSL3
http_server_config:
  headers:
    Server: me
basic_auth_users:
  john: doe
rate_limit: {}
"""
    problems = problems_of(write(pki.ca.parent, text, name="many.yml"))
    needles = ["nope.crt", "RequireAnyClientCert", "min_version", "Server cannot be set", "john", "rate_limit"]
    assert len(problems) == len(needles), problems
    for needle in needles:
        assert sum(needle in problem for problem in problems) == 1, (needle, problems)


# --- as a setting -------------------------------------------------------------------


def test_setting_names() -> None:
    """The option is web.config_file: --web.config-file, WATCHER_WEB_CONFIG_FILE; empty by default."""
    option = {o.path: o for o in config.options()}["web.config_file"]
    assert (option.flag, option.env, option.default) == ("--web.config-file", "WATCHER_WEB_CONFIG_FILE", "")


def test_config_load_checks_the_web_config_with_everything_else(tmp_path: Path) -> None:
    """A bad web config file is a configuration problem, listed with the others."""
    path = write(tmp_path, "basic_auth_users:\n  john: doe\nfoo: 1\n")
    with pytest.raises(ConfigError) as caught:
        config.load(environ={"WATCHER_WEB_CONFIG_FILE": path}, flags={"log.level": "loud"})
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert [p for p in problems if p.startswith("web.config_file: ")] == [
        f"web.config_file: web config file {path}: unknown key foo",
        f"web.config_file: web config file {path}: basic_auth_users.john: not a bcrypt hash ({webconfig.BCRYPT_HINT})",
    ]


def test_config_load_accepts_a_good_web_config(pki: Pki) -> None:
    """A good web config file passes config.load and is kept as its path."""
    path = write(pki.ca.parent, GOOD_TLS, name="good.yml")
    assert config.load(environ={}, flags={"web.config_file": path}).web.config_file == path


@pytest.mark.usefixtures("clean_environ")
def test_cli_exits_2_on_a_bad_web_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check-config with a broken web config exits 2 and prints each problem on its own line."""
    path = write(tmp_path, "tls_server_config:\n  cert_file: a.crt\nbasic_auth_users:\n  john: doe\n")
    assert cli.main(["--check-config", "--web.config-file", path]) == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("  - web.config_file: ")]) == 3, err


@pytest.mark.usefixtures("clean_environ")
def test_check_config_prints_the_path(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """--check-config with a good web config exits 0 and shows the setting."""
    path = write(pki.ca.parent, GOOD_TLS, name="good.yml")
    assert cli.main(["--check-config", "--web.config-file", path]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["web"]["config_file"] == path
