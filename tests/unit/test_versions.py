from __future__ import annotations

import time

import pytest

from watcher.domain.versions import compare, is_ordered

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
OTHER_SHA = "deadbeefcafe"

COMPARE_CASES: list[tuple[str, str, int | None]] = [
    # rule 1: whitespace and a leading v
    ("v2.0.0", "2.0.0", 0),
    ("v1.2.3", "V1.2.3", 0),
    ("  1.2.3\n", "1.2.3", 0),
    ("\tv1.0 ", "1.0.0", 0),
    # rule 2: SHAs are unordered
    (SHA, OTHER_SHA, None),
    ("1a2b3c4", "1a2b3c5", None),
    ("abcdef1", "1.0.0", None),
    (SHA, SHA, 0),
    (f" {SHA} ", SHA, 0),
    # rule 3: dates
    ("2024-05-01", "2024-05-02", -1),
    ("2024-05-02", "2024-05-02T10:00", -1),
    ("2024-05-02T10:00", "2024-06-01", -1),
    ("2024-05-01", "2024-06-01", -1),
    ("20240501", "2024-05-01", 0),
    ("2024-05-02T10:00", "2024-05-02T10:00:00", 0),
    ("2024-05-02T10:00:01", "2024-05-02T10:00", 1),
    ("20240502_1030", "2024-05-02T10:29", 1),
    ("20240502-103000", "20240502_1030", 0),
    ("2024-05-02.2", "2024-05-02.10", -1),
    ("2024-05-02", "2024-05-02.1", -1),
    ("19991231", "20000101", -1),
    # rule 4: numeric versions
    ("1.10.0", "1.9.0", 1),
    ("1.2.3", "1.2.10", -1),
    ("2.0", "10.0", -1),
    ("100", "99", 1),
    ("1234567", "1234568", -1),
    ("1.2", "1.2.0", 0),
    ("1", "1.0.0", 0),
    ("1.2.3.4", "1.2.3", 1),
    ("42", "42.0.1", -1),
    ("1.0.0+a", "1.0.0+b", 0),
    ("1.0.0-rc.1+build.5", "1.0.0-rc.1", 0),
    ("3.0.0-beta", "3.0.0", -1),
    ("1.0.0-0", "1.0.0", -1),
    ("1.2.3rc1", "1.2.3", -1),
    ("1.2.3rc1", "1.2.3-rc1", 0),
    ("1.0.0-alpha", "1.0.0-alpha.1", -1),
    ("1.0.0-alpha.1", "1.0.0-alpha.beta", -1),
    ("1.0.0-alpha.beta", "1.0.0-beta", -1),
    ("1.0.0-beta", "1.0.0-beta.2", -1),
    ("1.0.0-beta.2", "1.0.0-beta.11", -1),
    ("1.0.0-beta.11", "1.0.0-rc.1", -1),
    ("1.0.0-rc.1", "1.0.0", -1),
    ("1.0.0-rc.1", "0.9.9", 1),
    # rules 5 and 6: unordered values and different kinds
    ("latest", "latest", 0),
    ("latest", "stable", None),
    ("latest", "1.0", None),
    ("1.0", "latest", None),
    ("main", "1.0.0", None),
    ("release-42", "release-43", None),
    ("", "1.0", None),
    ("   ", "1.0", None),
    ("", "", 0),
    ("1.0 beta", "1.0", None),
    ("2024-05-01", "1.0.0", None),
    ("1.0.0", "20240501", None),
    ("2024-13-01", "2024-12-01", None),
]


@pytest.mark.parametrize(("a", "b", "expected"), COMPARE_CASES)
def test_compare(a: str, b: str, expected: int | None) -> None:
    """compare orders each pair as the table says."""
    assert compare(a, b) == expected


@pytest.mark.parametrize(("a", "b", "expected"), COMPARE_CASES)
def test_compare_is_antisymmetric(a: str, b: str, expected: int | None) -> None:
    """Swapping the arguments negates the result, and None stays None."""
    forward, backward = compare(a, b), compare(b, a)
    if forward is None:
        assert backward is None
    else:
        assert backward == -forward


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1", True),
        ("42", True),
        ("1.2.3", True),
        ("v1.2.3", True),
        ("V1.2.3", True),
        (" 1.2.3 ", True),
        ("1.2.3-rc.1+build", True),
        ("1.2.3rc1", True),
        ("1234567", True),
        ("2024-05-01", True),
        ("20240501", True),
        ("2024-05-01T10:00:00", True),
        ("20240501_1030", True),
        ("2024-05-01.3", True),
        ("20241399", True),  # not a valid date, so a build number
        ("2024-13-01", False),
        ("2024-05-01T25:00", False),
        ("1a2b3c4", False),
        ("DEADBEEF", False),
        (SHA, False),
        ("latest", False),
        ("stable", False),
        ("main", False),
        ("release-42", False),
        ("v", False),
        ("vlatest", False),
        ("", False),
        ("   ", False),
        ("1.0 beta", False),
        ("1..2", False),
        ("1.2.", False),
        ("-1", False),
        ("1.0.0+", False),
        ("１.２", False),  # full-width digits are not ASCII digits
        ("١٢٣", False),  # Arabic-Indic digits
    ],
)
def test_is_ordered(version: str, expected: bool) -> None:
    """is_ordered tells ordered versions from unordered ones."""
    assert is_ordered(version) is expected


@pytest.mark.parametrize(
    "hostile",
    [
        "1" * 5000,
        "1." * 2500,
        "1.0.0-" + "a." * 2500 + "a",
        "1.0\n2.0",
        '1.0"',
        "1.0\x00",
        "'1.0'",
        "1.0é",
        "v1.0\r\n\x00\"'ü漢字",
        "\x00" * 100,
    ],
)
def test_hostile_input_is_unordered(hostile: str) -> None:
    """Long or odd values are unordered and never raise or hang."""
    started = time.perf_counter()
    assert compare(hostile, "1.0.0") is None
    assert compare("1.0.0", hostile) is None
    assert is_ordered(hostile) is False
    assert time.perf_counter() - started < 1.0


def test_huge_numbers_compare_numerically() -> None:
    """Numbers with hundreds of digits compare by value, not as strings or floats."""
    assert compare("9" * 400, "9" * 399 + "8") == 1
    assert compare("9" * 399 + "8", "9" * 400) == -1
    assert compare("1." + "0" * 400 + "1", "1.2") == -1
    assert compare("0" * 300 + "7", "7") == 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.0.0-rc9", "1.0.0-rc10"),
        ("1.0.0-beta2", "1.0.0-beta10"),
        ("1.2.3rc2", "1.2.3rc11"),
        ("1.0.0-alpha", "1.0.0-alpha2"),
        ("1.0.0-alpha10", "1.0.0-beta1"),
        ("1.0.0-rc9", "1.0.0-rc.10"),
        ("1.0.0-rc.9", "1.0.0-rc10"),
        ("2.0.0-m9-hotfix", "2.0.0-m10-hotfix"),
        ("1.0.0-rc10", "1.0.0"),
    ],
)
def test_embedded_numbers_compare_naturally(a: str, b: str) -> None:
    """Numbers inside an alphanumeric pre-release identifier compare by value: rc9 < rc10, beta2 < beta10."""
    assert compare(a, b) == -1
    assert compare(b, a) == 1


def test_embedded_numbers_are_identifiers_of_their_own() -> None:
    """rc9 reads as rc.9, and rc01 as rc1 (as the numeric identifiers 01 and 1 already compare); by value, however long."""
    assert compare("1.0.0-rc9", "1.0.0-rc.9") == 0
    assert compare("1.0.0-rc01", "1.0.0-rc1") == 0
    assert compare("1.0.0-rc" + "9" * 300, "1.0.0-rc1" + "0" * 300) == -1
