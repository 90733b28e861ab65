"""Quantities against the official client's parser, and durations."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as client_parse_quantity

from webhook.core.quantities import format_hours, parse_duration, parse_quantity

# Valid Kubernetes quantities, built from the API server's grammar.
_digits = st.text("0123456789", min_size=1, max_size=6)
_number = st.one_of(
    _digits,
    st.builds(lambda a, b: f"{a}.{b}", _digits, _digits),
    st.builds(lambda a: f"{a}.", _digits),
    st.builds(lambda b: f".{b}", _digits),
)
_suffix = st.one_of(
    st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "P", "E"]),
    st.sampled_from(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]),
    st.builds(
        lambda e, n: f"{e}{n}",
        st.sampled_from(["e", "E", "e+", "e-", "E-"]),
        st.integers(0, 30).map(str),
    ),
)
valid_quantities = st.builds(
    lambda sign, number, suffix: f"{sign}{number}{suffix}",
    st.sampled_from(["", "+", "-"]),
    _number,
    _suffix,
)


def _client(text: str) -> Decimal | None:
    try:
        return client_parse_quantity(text)
    except (ValueError, ArithmeticError):
        return None


@settings(max_examples=3000)
@given(valid_quantities)
@example("500m")
@example("8")
@example("1Ki")
@example("1e3")
@example(".5")
def test_valid_quantities_read_like_the_official_client(text: str) -> None:
    ours = parse_quantity(text)
    assert ours is not None, text
    assert ours == _client(text), text


@settings(max_examples=3000)
@given(st.text(alphabet=st.sampled_from("0123456789.+-eEikKmMGTPnu ∞_xNaIfy"), max_size=8))
@example("K")
@example("1K")  # the client accepts upper-case K; the API server does not
@example("NaN")
@example("Infinity")
@example("1_000")
@example(" 1")
@example("1ki")
def test_anything_we_accept_the_client_reads_the_same(text: str) -> None:
    ours = parse_quantity(text)
    if ours is not None:
        assert ours == _client(text), text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", Decimal(1)),
        ("0", Decimal(0)),
        ("500m", Decimal("0.5")),
        ("1k", Decimal(1000)),
        ("2Ki", Decimal(2048)),
        ("1e2", Decimal(100)),
        (8, Decimal(8)),  # a YAML integer from a manifest read by the CLI
        (1.5, Decimal("1.5")),  # a YAML float: a quantity, not a whole GPU count
    ],
    ids=[
        "a plain count",
        "zero",
        "milli-units are a fraction",
        "decimal SI suffix",
        "binary SI suffix",
        "exponent",
        "an integer from YAML",
        "a float from YAML",
    ],
)
def test_quantities_read_as_numbers(value: object, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "K",
        "1K",
        "NaN",
        "Infinity",
        "1_000",
        " 1",
        "1 ",
        "1ki",
        "abc",
        "1.5.5",
        "--1",
        "1e99999",
        True,
        float("nan"),
        float("inf"),
        None,
        [],
        "9" * 65,
        "²",  # str.isdigit() is true for it, Decimal() refuses it
        "٨",  # an Arabic-Indic eight
    ],
    ids=lambda v: f"refuses {v!r}"[:40],
)
def test_things_that_are_not_quantities(value: object) -> None:
    assert parse_quantity(value) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("12h", 43200),
        ("2d", 172800),
        ("3600", 3600),
        ("3600s", 3600),
        ("1h30m", 5400),
        ("1.5h", 5400),
        (" 2h ", 7200),
    ],
    ids=[
        "minutes",
        "hours",
        "days",
        "bare seconds",
        "seconds",
        "compound",
        "decimal hours",
        "surrounding spaces",
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0h",
        "-1h",
        "1w",
        "h",
        "12 h",
        "1.5s",
        "abc",
        "1h-30m",
        "99999999999d",
        "3e3",
        "1h 30m",
        "1d" * 20,
        "²",  # Unicode digits are not durations
        "١٢h",
    ],
    ids=lambda t: f"refuses {t!r}"[:40],
)
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86400, "24h"), (43200, "12h"), (5400, "1.5h"), (1800, "30m"), (45, "45s"), (3601, "1h")],
)
def test_hours_as_shown_in_estimates(seconds: int, text: str) -> None:
    assert format_hours(seconds) == text
