"""The Range header parser of downloads (RFC 9110, section 14.1.2)."""

from __future__ import annotations

import pytest

from api.byte_ranges import MAX_RANGES, MalformedRange, UnsatisfiableRange, parse_byte_ranges


@pytest.mark.parametrize(
    ("header", "spans"),
    [
        ("bytes=0-99", [(0, 100)]),
        ("bytes=100-", [(100, 1000)]),
        ("bytes=-10", [(990, 1000)]),
        ("bytes=-5000", [(0, 1000)]),  # a suffix longer than the file: all of it
        ("bytes=900-5000", [(900, 1000)]),  # the end is clamped to the file's
        ("bytes=500-599, 0-9", [(0, 10), (500, 600)]),  # sorted
        ("bytes=0-99,50-149,150-199", [(0, 200)]),  # overlapping and touching: merged
        ("BYTES = 0-0", [(0, 1)]),
        ("bytes=0-9, 2000-3000", [(0, 10)]),  # the range past the end is dropped
    ],
)
def test_ranges_are_read_as_half_open_spans(header: str, spans: list[tuple[int, int]]) -> None:
    assert parse_byte_ranges(header, 1000) == spans


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0", "bytes=0-"])
def test_ranges_wholly_outside_the_file_are_unsatisfiable(header: str) -> None:
    size = 0 if header == "bytes=0-" else 1000
    with pytest.raises(UnsatisfiableRange):
        parse_byte_ranges(header, size)


@pytest.mark.parametrize(
    "header", ["0-99", "items=0-99", "bytes=", "bytes=abc", "bytes=5-2", "bytes=-", "bytes=1-x"]
)
def test_malformed_ranges_are_refused(header: str) -> None:
    with pytest.raises(MalformedRange):
        parse_byte_ranges(header, 1000)


def test_a_flood_of_ranges_is_served_whole() -> None:
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    assert parse_byte_ranges(header, 1000) == []
