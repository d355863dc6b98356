"""Unit tests of labels: table-driven, plain data."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.builders import IMAGE, IMAGE_ID, problems_on
from tests.unit.builders import LABEL_DEFAULTS as DEFAULTS
from tests.unit.builders import LABELS_CREATED as CREATED
from tests.unit.builders import LABELS_NOW as NOW
from tests.unit.builders import parse_labels as parse
from watcher.config import LabelSettings
from watcher.domain import labels
from watcher.domain.labels import LabelProblem, Parsed
from watcher.domain.model import DeploymentKey, Identity, Status

SHORT_ID = "0123456789ab"
COMPOSE = LabelSettings(track_compose=True)

# The labels the code reports problems about besides labels.ALL: the OCI image labels
# version and commit fall back to. (A compose name's problems are reported on
# deployment.name, an image tag's on deployment.version.)
FALLBACK_LABELS = frozenset({labels.OCI_VERSION, labels.OCI_REVISION})


def identity_of(parsed: Parsed) -> Identity:
    assert parsed.identity is not None, parsed.problems
    return parsed.identity


def field_value(identity: Identity, label: str) -> str:
    """The identity field a cleaned label ends up in."""
    return {
        labels.NAME: identity.key.name,
        labels.ENVIRONMENT: identity.key.environment,
        labels.VERSION: identity.version,
        labels.COMMIT: identity.commit,
    }[label]


# --- is_tracked -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "settings", "expected"),
    [
        ({labels.NAME: "api"}, DEFAULTS, True),
        ({labels.NAME: ""}, DEFAULTS, True),
        ({labels.NAME: "api"}, COMPOSE, True),
        ({}, DEFAULTS, False),
        ({}, COMPOSE, False),
        ({"maintainer": "ops@example.com"}, DEFAULTS, False),
        ({labels.COMPOSE_PROJECT: "shop", labels.COMPOSE_SERVICE: "web"}, DEFAULTS, False),
        ({labels.COMPOSE_PROJECT: "shop", labels.COMPOSE_SERVICE: "web"}, COMPOSE, True),
        ({labels.COMPOSE_PROJECT: "shop"}, COMPOSE, False),
        ({labels.COMPOSE_SERVICE: "web"}, COMPOSE, False),
        ({labels.SWARM_SERVICE_ID: "s1", labels.SWARM_SERVICE_NAME: "web"}, DEFAULTS, True),
    ],
)
def test_is_tracked(values: dict[str, str], settings: LabelSettings, expected: bool) -> None:
    """is_tracked needs deployment.name, or both compose labels when compose tracking is on; a
    Swarm task always (its service's deployment may claim it)."""
    assert labels.is_tracked(values, settings=settings) is expected


# --- deployment.name ------------------------------------------------------------------


def test_minimal_labels_give_a_full_identity() -> None:
    """Only deployment.name set: every other field takes its documented default."""
    parsed = parse({labels.NAME: "api"})
    assert parsed.problems == ()
    assert parsed.identity == Identity(
        key=DeploymentKey("api", "production"),
        version="1.4.2",
        commit="",
        image=IMAGE,
        created_at=CREATED,
        deployed_at=CREATED,
        status_override=None,
        stable_seconds=None,
        progress_deadline_seconds=None,
    )


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"maintainer": "ops@example.com"},
        {labels.ENVIRONMENT: "staging", labels.VERSION: "1.0.0"},
    ],
)
def test_missing_name_is_not_a_deployment(values: dict[str, str]) -> None:
    """Without deployment.name a container is silently not a deployment."""
    assert parse(values) == Parsed(None, ())


def test_swarm_task_without_a_name_has_an_empty_one() -> None:
    """A Swarm task's container without deployment.name: an empty name, no problem (its service
    names it); with compose tracking on, its service's name."""
    task = {labels.SWARM_SERVICE_ID: "s1", labels.SWARM_SERVICE_NAME: "web", labels.ENVIRONMENT: "prod"}
    parsed = parse(task)
    assert parsed.problems == () and identity_of(parsed).key == DeploymentKey("", "prod")
    tracked = labels.parse(task, image=IMAGE, image_id="", created_at=CREATED, now=CREATED, settings=COMPOSE)
    assert identity_of(tracked).key == DeploymentKey("web", "prod")


@pytest.mark.parametrize("name", ["", " ", "   ", "\t", "\n \n"])
def test_empty_name_is_ignored_with_a_problem(name: str) -> None:
    """An empty or whitespace deployment.name drops the container and reports it."""
    parsed = parse({labels.NAME: name, labels.VERSION: "1.0.0"})
    assert parsed.identity is None
    assert any("empty" in message for message in problems_on(parsed, labels.NAME))


def test_name_is_stripped() -> None:
    """Surrounding whitespace is not part of the name and is no problem."""
    parsed = parse({labels.NAME: "  api  "})
    assert identity_of(parsed).key.name == "api"
    assert parsed.problems == ()


# --- deployment.environment -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "settings", "expected", "problem"),
    [
        ({}, DEFAULTS, "production", False),
        ({}, LabelSettings(default_environment="staging"), "staging", False),
        ({labels.ENVIRONMENT: "staging"}, DEFAULTS, "staging", False),
        ({labels.ENVIRONMENT: " qa "}, DEFAULTS, "qa", False),
        ({labels.ENVIRONMENT: ""}, DEFAULTS, "production", True),
        ({labels.ENVIRONMENT: "   "}, DEFAULTS, "production", True),
        ({labels.ENVIRONMENT: ""}, LabelSettings(default_environment="dev"), "dev", True),
    ],
)
def test_environment(values: dict[str, str], settings: LabelSettings, expected: str, problem: bool) -> None:
    """A missing environment takes the default silently; an empty one takes it with a problem."""
    parsed = parse({labels.NAME: "api", **values}, settings=settings)
    assert identity_of(parsed).key == DeploymentKey("api", expected)
    assert bool(problems_on(parsed, labels.ENVIRONMENT)) is problem
    assert [p.label for p in parsed.problems] == ([labels.ENVIRONMENT] if problem else [])


# --- version fallback chain -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "image", "image_id", "expected"),
    [
        # deployment.version wins over everything
        ({labels.VERSION: "2.0.0", labels.OCI_VERSION: "1.9.0"}, "api:1.8.0", IMAGE_ID, "2.0.0"),
        ({labels.VERSION: " 2.0.0 "}, "api:1.8.0", IMAGE_ID, "2.0.0"),
        # then the OCI image version
        ({labels.OCI_VERSION: "1.9.0"}, "api:1.8.0", IMAGE_ID, "1.9.0"),
        # then an explicit image tag
        ({}, "api:1.8.0", IMAGE_ID, "1.8.0"),
        ({}, IMAGE, IMAGE_ID, "1.4.2"),
        ({}, "host:5000/repo:3.1", IMAGE_ID, "3.1"),
        ({}, "repo:2.0@sha256:" + "f" * 64, IMAGE_ID, "2.0"),
        ({labels.OCI_VERSION: ""}, "api:1.8.0", IMAGE_ID, "1.8.0"),
        # not a tag: latest, none, a registry port, a digest → the short image id
        ({}, "api:latest", IMAGE_ID, SHORT_ID),
        ({}, "registry.example.com/shop/api:latest", IMAGE_ID, SHORT_ID),
        ({}, "api", IMAGE_ID, SHORT_ID),
        ({}, "host:5000/repo", IMAGE_ID, SHORT_ID),
        ({}, "repo@sha256:" + "f" * 64, IMAGE_ID, SHORT_ID),
        ({}, "host:5000/repo@sha256:" + "f" * 64, IMAGE_ID, SHORT_ID),
        ({}, "", IMAGE_ID, SHORT_ID),
        ({}, "api:latest", "0123456789abcdef0123", SHORT_ID),
        # nothing at all
        ({}, "", "", "unknown"),
    ],
)
def test_version_fallback_chain(values: dict[str, str], image: str, image_id: str, expected: str) -> None:
    """deployment.version → OCI image version → explicit image tag → 12-char short image id."""
    parsed = parse({labels.NAME: "api", **values}, image=image, image_id=image_id)
    assert identity_of(parsed).version == expected
    assert parsed.problems == ()


def test_short_image_id_has_no_prefix() -> None:
    """The short image id is 12 hex characters, without ``sha256:``."""
    version = identity_of(parse({labels.NAME: "api"}, image="api", image_id=IMAGE_ID)).version
    assert version == SHORT_ID
    assert len(version) == 12
    assert "sha256" not in version


def test_short_image_id_fallback_is_cleaned() -> None:
    """Regression (property test): an odd image id used as the version is made printable too."""
    version = identity_of(parse({labels.NAME: "api"}, image="api", image_id="sha256:ab\x00\ud7fccd")).version
    assert version.isprintable() and version == "ab  cd"


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_version_falls_back_with_a_problem(empty: str) -> None:
    """An empty deployment.version is reported and the image version is used."""
    parsed = parse({labels.NAME: "api", labels.VERSION: empty, labels.OCI_VERSION: "1.9.0"})
    assert identity_of(parsed).version == "1.9.0"
    assert [p.label for p in parsed.problems] == [labels.VERSION]


# --- commit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({labels.COMMIT: "abc1234"}, "abc1234"),
        ({labels.COMMIT: "abc1234", labels.OCI_REVISION: "def5678"}, "abc1234"),
        ({labels.OCI_REVISION: "def5678"}, "def5678"),
        ({labels.COMMIT: "", labels.OCI_REVISION: "def5678"}, "def5678"),
        ({}, ""),
    ],
)
def test_commit_falls_back_to_the_oci_revision(values: dict[str, str], expected: str) -> None:
    """deployment.commit, else org.opencontainers.image.revision, else empty."""
    parsed = parse({labels.NAME: "api", **values})
    assert identity_of(parsed).commit == expected
    assert parsed.problems == ()


# --- deployment.timestamp -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1699999990", 1_699_999_990.0),
        (" 1699999990.5 ", 1_699_999_990.5),
        ("1.69999999e9", 1_699_999_990.0),
        (str(int(NOW) + 3600), NOW + 3600),  # a little ahead: clock skew, accepted
        (str(int(CREATED) - 17 * 60), CREATED - 17 * 60),  # a CI job's start, 17 minutes before the container
        (str(int(CREATED) - 3600), CREATED - 3600),  # labels.max_timestamp_age_seconds before creation, accepted
    ],
)
def test_valid_timestamp(raw: str, expected: float) -> None:
    """A deployment.timestamp in unix seconds becomes deployed_at."""
    parsed = parse({labels.NAME: "api", labels.TIMESTAMP: raw})
    assert identity_of(parsed).deployed_at == expected
    assert identity_of(parsed).created_at == CREATED
    assert parsed.problems == ()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("abc", "not unix seconds"),
        ("", "not unix seconds"),
        ("2024-05-01T12:00:00Z", "not unix seconds"),
        ("-1", "not unix seconds"),
        ("-1700000000", "not unix seconds"),
        ("nan", "not unix seconds"),
        ("NaN", "not unix seconds"),
        ("inf", "not unix seconds"),
        ("-inf", "not unix seconds"),
        ("1e400", "not unix seconds"),
        (str(int(NOW * 1000)), "future"),  # milliseconds
        (str(int(NOW * 1_000_000)), "future"),  # microseconds
        (str(NOW + 2 * 86400), "future"),
        # Accepted as deploy times before, they failed the rollout at once and put a sample of
        # 1.7e9 s into the duration histogram; "0" was listed among the valid timestamps.
        ("0", "before the year 2000"),
        ("1000", "before the year 2000"),
        ("946684799", "before the year 2000"),
        (
            str(int(CREATED) - 3601),
            "lies 3601 s before the container was created, more than labels.max_timestamp_age_seconds (3600 s)",
        ),
    ],
)
def test_bad_timestamp_falls_back_to_created_at(raw: str, reason: str) -> None:
    """An unusable deployment.timestamp is reported and the creation time is used."""
    parsed = parse({labels.NAME: "api", labels.TIMESTAMP: raw})
    assert identity_of(parsed).deployed_at == CREATED
    messages = problems_on(parsed, labels.TIMESTAMP)
    assert len(messages) == 1
    assert reason in messages[0]
    assert len(parsed.problems) == 1


def test_timestamp_age_is_configurable() -> None:
    """labels.max_timestamp_age_seconds bounds how long before the creation a deploy may have started."""
    raw = str(int(CREATED) - 120)
    assert identity_of(parse({labels.NAME: "api", labels.TIMESTAMP: raw})).deployed_at == CREATED - 120
    strict = parse({labels.NAME: "api", labels.TIMESTAMP: raw}, settings=LabelSettings(max_timestamp_age_seconds=60))
    assert identity_of(strict).deployed_at == CREATED
    assert problems_on(strict, labels.TIMESTAMP) == [
        f"'{raw}' lies 120 s before the container was created, more than labels.max_timestamp_age_seconds (60 s); "
        "using the creation time"
    ]


def test_missing_timestamp_is_created_at() -> None:
    """Without deployment.timestamp the deploy started when the container was created."""
    assert identity_of(parse({labels.NAME: "api"})).deployed_at == CREATED


# --- deployment.status ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("in_progress", Status.IN_PROGRESS),
        ("IN_PROGRESS", Status.IN_PROGRESS),
        ("in-progress", Status.IN_PROGRESS),
        ("In-Progress", Status.IN_PROGRESS),
        ("success", Status.SUCCESS),
        ("SUCCESS", Status.SUCCESS),
        (" success\n", Status.SUCCESS),
        ("failed", Status.FAILED),
        ("Failed", Status.FAILED),
    ],
)
def test_status_override(raw: str, expected: Status) -> None:
    """deployment.status is case-insensitive and accepts a hyphen for the underscore."""
    parsed = parse({labels.NAME: "api", labels.STATUS: raw})
    assert identity_of(parsed).status_override is expected
    assert parsed.problems == ()


@pytest.mark.parametrize("raw", ["done", "", "ok", "in progress", "succeeded", "0"])
def test_unknown_status_is_ignored_with_a_problem(raw: str) -> None:
    """An unknown deployment.status is no override, and is reported."""
    parsed = parse({labels.NAME: "api", labels.STATUS: raw})
    assert identity_of(parsed).status_override is None
    assert [p.label for p in parsed.problems] == [labels.STATUS]


def test_missing_status_is_no_override() -> None:
    """Without deployment.status the state machine decides."""
    parsed = parse({labels.NAME: "api"})
    assert identity_of(parsed).status_override is None
    assert parsed.problems == ()


# --- tuning labels --------------------------------------------------------------------

TUNING = [labels.STABLE_SECONDS, labels.PROGRESS_DEADLINE]


def tuning_value(identity: Identity, label: str) -> float | None:
    return identity.stable_seconds if label == labels.STABLE_SECONDS else identity.progress_deadline_seconds


@pytest.mark.parametrize("label", TUNING)
@pytest.mark.parametrize(("raw", "expected"), [("30", 30.0), ("0", 0.0), ("1.5", 1.5), (" 120 ", 120.0)])
def test_valid_tuning_label(label: str, raw: str, expected: float) -> None:
    """deployment.stable_seconds and progress_deadline_seconds take non-negative seconds."""
    parsed = parse({labels.NAME: "api", label: raw})
    assert tuning_value(identity_of(parsed), label) == expected
    assert parsed.problems == ()


@pytest.mark.parametrize("label", TUNING)
@pytest.mark.parametrize("raw", ["abc", "", "-1", "nan", "inf", "10s", "1e400"])
def test_invalid_tuning_label(label: str, raw: str) -> None:
    """An invalid tuning label falls back to the configured default and is reported."""
    parsed = parse({labels.NAME: "api", label: raw})
    identity = identity_of(parsed)
    assert tuning_value(identity, label) is None
    assert [p.label for p in parsed.problems] == [label]
    assert "not a number of seconds" in parsed.problems[0].message


def test_tuning_labels_default_to_none() -> None:
    """Without tuning labels the configured defaults apply (None)."""
    identity = identity_of(parse({labels.NAME: "api"}))
    assert identity.stable_seconds is None
    assert identity.progress_deadline_seconds is None


# --- bad values -----------------------------------------------------------------------

CLEANED = [labels.NAME, labels.ENVIRONMENT, labels.VERSION, labels.COMMIT]


def with_value(label: str, value: str) -> dict[str, str]:
    values = {labels.NAME: "api", labels.ENVIRONMENT: "prod", labels.VERSION: "1.0.0", labels.COMMIT: "abc1234"}
    values[label] = value
    return values


@pytest.mark.parametrize("label", CLEANED)
@pytest.mark.parametrize("settings", [DEFAULTS, LabelSettings(max_value_length=16)])
def test_long_value_is_truncated(label: str, settings: LabelSettings) -> None:
    """A 5000-character value is cut to max_value_length and reported."""
    parsed = parse(with_value(label, "a" * 5000), settings=settings)
    value = field_value(identity_of(parsed), label)
    assert value == "a" * settings.max_value_length
    messages = problems_on(parsed, label)
    assert len(messages) == 1
    assert "truncated" in messages[0]
    assert len(parsed.problems) == 1


def test_value_of_exactly_the_limit_is_kept() -> None:
    """A value exactly max_value_length long is no problem."""
    parsed = parse({labels.NAME: "n" * DEFAULTS.max_value_length})
    assert identity_of(parsed).key.name == "n" * DEFAULTS.max_value_length
    assert parsed.problems == ()


@pytest.mark.parametrize("label", CLEANED)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\nb", "a b"),
        ("a\r\nb", "a  b"),
        ("a\tb", "a b"),
        ("a\x00b", "a b"),
        ("a\x1b[31mb", "a [31mb"),
        ("a\u2028b", "a b"),
    ],
)
def test_control_characters_become_spaces(label: str, raw: str, expected: str) -> None:
    """Line breaks, tabs, NUL and other unprintables are replaced by spaces and reported."""
    parsed = parse(with_value(label, raw))
    assert field_value(identity_of(parsed), label) == expected
    messages = problems_on(parsed, label)
    assert len(messages) == 1
    assert "control characters" in messages[0]


@pytest.mark.parametrize("label", CLEANED)
@pytest.mark.parametrize("raw", ['say "hi"', "it's", "C:\\path", "back`tick`", '\\"'])
def test_quotes_and_backslashes_are_kept_and_reported(label: str, raw: str) -> None:
    """Quotes and backslashes survive unchanged (escaped at exposition) but are reported."""
    parsed = parse(with_value(label, raw))
    assert field_value(identity_of(parsed), label) == raw
    messages = problems_on(parsed, label)
    assert len(messages) == 1
    assert "quotes or backslashes" in messages[0]


@pytest.mark.parametrize("label", CLEANED)
@pytest.mark.parametrize("raw", ["café", "日本語", "🚀", "naïve-1.0"])
def test_non_ascii_is_kept_and_reported(label: str, raw: str) -> None:
    """Non-ASCII values are kept as they are and reported."""
    parsed = parse(with_value(label, raw))
    assert field_value(identity_of(parsed), label) == raw
    messages = problems_on(parsed, label)
    assert len(messages) == 1
    assert "non-ASCII" in messages[0]


def assert_encodes(parsed: Parsed) -> None:
    identity = identity_of(parsed)
    for text in (*identity.key, identity.version, identity.commit, identity.image):
        text.encode("utf-8")
    for problem in parsed.problems:
        problem.label.encode("utf-8")
        problem.message.encode("utf-8")


@pytest.mark.parametrize("label", CLEANED)
@pytest.mark.parametrize(("raw", "expected"), [("\ud800", "?"), ("v1\udfff", "v1?"), ("\udcff\ud800x", "??x")])
def test_lone_surrogate_is_replaced(label: str, raw: str, expected: str) -> None:
    """A lone surrogate (possible from JSON) never raises: it becomes ``?`` and the result encodes as UTF-8."""
    parsed = parse(with_value(label, raw))
    assert_encodes(parsed)
    assert field_value(identity_of(parsed), label) == expected


@pytest.mark.parametrize("label", [labels.TIMESTAMP, labels.STATUS, labels.STABLE_SECONDS, labels.PROGRESS_DEADLINE])
@pytest.mark.parametrize("raw", ["\ud800", "1\udfff", "\udcff\ud800x"])
def test_lone_surrogate_in_parsed_labels_is_a_problem(label: str, raw: str) -> None:
    """A lone surrogate in a number or status label never raises, is reported, and the message encodes."""
    parsed = parse(with_value(label, raw))
    assert_encodes(parsed)
    assert [p.label for p in parsed.problems] == [label]


def test_lone_surrogate_in_oci_labels_and_compose_labels() -> None:
    """Surrogates in OCI and compose labels are made encodable too."""
    parsed = parse({labels.NAME: "api", labels.OCI_VERSION: "\ud800", labels.OCI_REVISION: "\ud800"})
    assert_encodes(parsed)
    parsed = parse({labels.COMPOSE_PROJECT: "\ud800", labels.COMPOSE_SERVICE: "web"}, settings=COMPOSE)
    assert_encodes(parsed)
    assert identity_of(parsed).key.name == "?/web"


def test_lone_surrogate_in_image() -> None:
    """A surrogate in the image reference or its tag never reaches an exported value."""
    parsed = parse({labels.NAME: "api"}, image="re\ud800po:1.\udfff")
    assert_encodes(parsed)
    assert identity_of(parsed).version == "1.?"
    assert identity_of(parsed).image == "re?po:1.?"


def test_all_bad_at_once_never_raises() -> None:
    """Every label bad at the same time: still an identity, and every problem is listed."""
    hostile = "\ud800\n\"'\\é" + "x" * 5000
    parsed = parse({label: hostile for label in labels.ALL})
    identity = identity_of(parsed)
    assert_encodes(parsed)
    assert len(identity.key.name) <= DEFAULTS.max_value_length
    assert {p.label for p in parsed.problems} == set(labels.ALL)


# --- compose tracking -----------------------------------------------------------------

COMPOSE_LABELS = {labels.COMPOSE_PROJECT: "shop", labels.COMPOSE_SERVICE: "web"}


def test_compose_service_is_tracked_when_enabled() -> None:
    """With track_compose, a compose service without deployment.name is <project>/<service>."""
    parsed = parse(COMPOSE_LABELS, settings=COMPOSE)
    assert identity_of(parsed).key == DeploymentKey("shop/web", "production")
    assert parsed.problems == ()


def test_compose_service_is_ignored_by_default() -> None:
    """Compose labels alone do not make a deployment unless track_compose is on."""
    assert parse(COMPOSE_LABELS) == Parsed(None, ())


def test_deployment_name_wins_over_compose() -> None:
    """deployment.name, when present, names the deployment even with compose tracking on."""
    parsed = parse({**COMPOSE_LABELS, labels.NAME: "api"}, settings=COMPOSE)
    assert identity_of(parsed).key.name == "api"


@pytest.mark.parametrize(
    "values",
    [
        {labels.COMPOSE_PROJECT: "shop"},
        {labels.COMPOSE_SERVICE: "web"},
    ],
)
def test_half_compose_labels_are_not_tracked(values: dict[str, str]) -> None:
    """Both compose labels are needed to build a name."""
    assert parse(values, settings=COMPOSE) == Parsed(None, ())


@pytest.mark.parametrize(
    "values",
    [
        {labels.COMPOSE_PROJECT: "", labels.COMPOSE_SERVICE: "web"},
        {labels.COMPOSE_PROJECT: "shop", labels.COMPOSE_SERVICE: "  "},
    ],
)
def test_empty_compose_label_is_ignored_with_a_problem(values: dict[str, str]) -> None:
    """An empty compose project or service gives an empty name: ignored and reported."""
    parsed = parse(values, settings=COMPOSE)
    assert parsed.identity is None
    assert problems_on(parsed, labels.NAME)


def test_compose_name_problems_are_reported_on_deployment_name() -> None:
    """A bad compose value is cleaned, and reported on deployment.name, the label it becomes."""
    parsed = parse({labels.COMPOSE_PROJECT: "sh\nop", labels.COMPOSE_SERVICE: "wéb"}, settings=COMPOSE)
    assert identity_of(parsed).key.name == "sh op/wéb"
    assert [p.label for p in parsed.problems] == [labels.NAME, labels.NAME]


def test_compose_name_is_stripped_per_part() -> None:
    """Whitespace around the project and the service is dropped without a problem."""
    parsed = parse({labels.COMPOSE_PROJECT: " shop ", labels.COMPOSE_SERVICE: "\tweb\n"}, settings=COMPOSE)
    assert identity_of(parsed).key.name == "shop/web"
    assert parsed.problems == ()


def test_long_compose_name_is_truncated() -> None:
    """The joined <project>/<service> name is cut to max_value_length like any other value."""
    values = {labels.COMPOSE_PROJECT: "p" * 100, labels.COMPOSE_SERVICE: "s" * 100}
    parsed = parse(values, settings=COMPOSE)
    assert identity_of(parsed).key.name == ("p" * 100 + "/" + "s" * 100)[: DEFAULTS.max_value_length]
    assert [p.label for p in parsed.problems] == [labels.NAME]


def test_image_tag_version_is_cleaned() -> None:
    """A version taken from the image tag is truncated like a label, reported on deployment.version."""
    settings = LabelSettings(max_value_length=8, default_environment="prod")
    parsed = parse({labels.NAME: "api"}, image="api:1.2.3-rc.1", settings=settings)
    assert identity_of(parsed).version == "1.2.3-rc"
    assert [p.label for p in parsed.problems] == [labels.VERSION]


# --- bounded problem labels -----------------------------------------------------------

PROBLEM_CASES: list[tuple[dict[str, str], LabelSettings]] = [
    ({labels.NAME: ""}, DEFAULTS),
    ({labels.NAME: "a\nb" + "x" * 500}, DEFAULTS),
    ({label: "\ud800\t'é" + "x" * 500 for label in labels.ALL}, DEFAULTS),
    ({labels.NAME: "api", labels.OCI_VERSION: "1.0\n", labels.OCI_REVISION: 'ab"c'}, DEFAULTS),
    ({labels.NAME: "api", labels.VERSION: "", labels.OCI_VERSION: "x" * 500}, DEFAULTS),
    ({labels.NAME: "api", labels.COMMIT: "", labels.OCI_REVISION: "ré\tv"}, DEFAULTS),
    ({labels.COMPOSE_PROJECT: "s\x00hop", labels.COMPOSE_SERVICE: "w\\eb"}, COMPOSE),
    ({labels.COMPOSE_PROJECT: "", labels.COMPOSE_SERVICE: "web"}, COMPOSE),
    ({labels.NAME: "api", labels.TIMESTAMP: "abc", labels.STATUS: "done"}, DEFAULTS),
    ({labels.NAME: "api", labels.STABLE_SECONDS: "-1", labels.PROGRESS_DEADLINE: "x"}, DEFAULTS),
]


@pytest.mark.parametrize(("values", "settings"), PROBLEM_CASES)
def test_problem_labels_are_bounded(values: dict[str, str], settings: LabelSettings) -> None:
    """A problem names a label from labels.ALL or one of the compose/OCI fallback labels, nothing else."""
    hostile_image = "\ud800" + "i" * 500 + ":\nbad"
    parsed = parse(values, image=hostile_image, settings=settings)
    assert parsed.problems
    for problem in parsed.problems:
        assert isinstance(problem, LabelProblem)
        assert problem.label in set(labels.ALL) | FALLBACK_LABELS


def test_fallback_labels_are_reported_under_their_own_names() -> None:
    """The code reports problems on the OCI labels under their own names, never on compose labels or the image."""
    seen = {
        p.label
        for values, settings in PROBLEM_CASES
        for p in parse(values, image="\ud800" + "i" * 500, settings=settings).problems
    }
    assert seen >= FALLBACK_LABELS
    assert "image" not in seen
    assert labels.COMPOSE_PROJECT not in seen
    assert labels.COMPOSE_SERVICE not in seen
    assert seen <= set(labels.ALL) | FALLBACK_LABELS


def test_image_is_cleaned_without_a_problem() -> None:
    """The image reference is cleaned for export; its problems are not counted."""
    parsed = parse({labels.NAME: "api", labels.VERSION: "1.0.0"}, image="x" * 500 + "\n")
    assert identity_of(parsed).image == "x" * DEFAULTS.max_value_length
    assert parsed.problems == ()


# --- every exported value respects max_value_length ----------------------------------


@pytest.mark.parametrize(
    ("values", "image", "settings"),
    [
        # the compose name joins two values, each up to the limit
        pytest.param(
            {labels.COMPOSE_PROJECT: "p" * 100, labels.COMPOSE_SERVICE: "s" * 100},
            IMAGE,
            COMPOSE,
            id="compose-name",
        ),
        # a version taken from the image tag
        pytest.param(
            {labels.NAME: "api"},
            "api:1.2.3-rc.1",
            LabelSettings(max_value_length=8, default_environment="prod"),
            id="image-tag-version",
        ),
    ],
)
def test_derived_values_respect_max_value_length(values: dict[str, str], image: str, settings: LabelSettings) -> None:
    """Label values built from other values are no longer than max_value_length either."""
    identity = identity_of(parse(values, image=image, settings=settings))
    for field in dataclasses.fields(identity):
        value = getattr(identity, field.name)
        texts = list(value) if isinstance(value, tuple) else [value]
        for text in texts:
            if isinstance(text, str):
                assert len(text) <= settings.max_value_length, (field.name, text)


def test_invalid_utf8_is_reported() -> None:
    """A lone surrogate (possible in JSON) is replaced and reported, not passed on silently."""
    parsed = labels.parse(
        {labels.NAME: "api", labels.VERSION: "1.0\ud800"},
        image="api:1", image_id="sha256:" + "a" * 64, created_at=1.0, now=2.0, settings=LabelSettings(),
    )  # fmt: skip
    assert parsed.identity is not None and parsed.identity.version == "1.0?"
    assert any(p.label == labels.VERSION and "UTF-8" in p.message for p in parsed.problems)
