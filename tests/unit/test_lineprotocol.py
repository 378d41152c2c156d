"""Line-protocol encoding from Arrow batches: expected lines written by hand from the rules."""

from __future__ import annotations

from itertools import accumulate

import pyarrow as pa
import pytest

from tierflow._errors import TierflowError
from tierflow._lineprotocol import (
    LineProtocolError,
    encode_batch,
    ns_isoformat,
    point_ns,
)


def lines(body: bytes) -> list[str]:
    assert body.endswith(b"\n") or body == b""
    return body.decode().splitlines()


def test_types_and_escaping_by_hand() -> None:
    batch = pa.record_batch(
        {
            "time": pa.array([10, 20], pa.int64()),
            "host": ["a b", "c=d,e"],
            "f": [1.5, -2.0],
            "i": pa.array([7, -(2**63)], pa.int64()),
            "u": pa.array([2**64 - 1, 0], pa.uint64()),
            "b": [True, False],
            "s": ['say "hi"', "back\\slash"],
        }
    )
    body = encode_batch("my m,x", batch, tags=["host"], fields=["f", "i", "u", "b", "s"]).body
    assert lines(body) == [
        'my\\ m\\,x,host=a\\ b f=1.5,i=7i,u=18446744073709551615u,b=true,s="say \\"hi\\"" 10',
        'my\\ m\\,x,host=c\\=d\\,e f=-2,i=-9223372036854775808i,u=0u,b=false,s="back\\\\slash" 20',
    ]


def test_nulls_are_left_out_and_empty_lines_dropped() -> None:
    batch = pa.record_batch(
        {
            "time": pa.array([1, 2, 3, 4], pa.int64()),
            "a": ["x", None, "", "y"],
            "b": [None, "z", "w", None],
            "v": pa.array([1.0, None, None, None], pa.float64()),
            "n": pa.array([None, 5, None, None], pa.int64()),
        }
    )
    encoded = encode_batch("m", batch, tags=["a", "b"], fields=["v", "n"])
    # Rows 3 and 4 hold no field: no point to write, dropped and counted.
    assert lines(encoded.body) == ["m,a=x v=1 1", "m,b=z n=5i 2"]
    assert (encoded.points, encoded.dropped) == (2, 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_float_1x_and_2x_cannot_store_is_refused_naming_field_and_point(bad: float) -> None:
    # Left out of its point (beside other fields) it would be lost without a word: refused.
    batch = pa.record_batch(
        {
            "time": pa.array([1, 2, 3], pa.int64()),
            "v": pa.array([1.0, bad, 2.0], pa.float64()),
            "n": pa.array([1, 2, 3], pa.int64()),
        }
    )
    with pytest.raises(LineProtocolError, match="cannot carry NaN or an infinity") as refused:
        encode_batch("m", batch, tags=[], fields=["n", "v"])
    assert (refused.value.column, refused.value.row) == ("v", 1)


def test_tags_are_sorted_and_a_sliced_batch_encodes_its_own_rows() -> None:
    batch = pa.record_batch(
        {
            "time": pa.array([1, 2, 3], pa.int64()),
            "z": ["1", "2", "3"],
            "a": ["x", "y", "z"],
            "v": pa.array([1, 2, 3], pa.int64()),
        }
    ).slice(1, 2)
    assert lines(encode_batch("m", batch, tags=["z", "a"], fields=["v"]).body) == [
        "m,a=y,z=2 v=2i 2",
        "m,a=z,z=3 v=3i 3",
    ]


def test_timestamps_columns_are_nanoseconds() -> None:
    batch = pa.record_batch(
        {"time": pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", tz="UTC")), "v": [1.0]}
    )
    assert lines(encode_batch("m", batch, tags=[], fields=["v"]).body) == [
        "m v=1 1700000000123456789"
    ]


def test_dictionary_tags_and_fields() -> None:
    batch = pa.record_batch(
        {
            "time": pa.array([1, 2], pa.int64()),
            "t": pa.array(["p q", "p q"]).dictionary_encode(),
            "s": pa.array(["k", "l"]).dictionary_encode(),
        }
    )
    assert lines(encode_batch("m", batch, tags=["t"], fields=["s"]).body) == [
        'm,t=p\\ q s="k" 1',
        'm,t=p\\ q s="l" 2',
    ]


def test_strings_keep_newlines_and_escape_only_quotes_and_backslashes() -> None:
    batch = pa.record_batch(
        {
            "time": pa.array([1, 2, 3, 4], pa.int64()),
            "s": ["two\nlines", "cr\r\nlf\r", "", 'end \\ and "q"\\'],
        }
    )
    encoded = encode_batch("m", batch, tags=[], fields=["s"])
    # Written by hand from 1.x models/points.go: inside quotes only \\ and \" are escapes.
    expected = [
        b'm s="two\nlines" 1\n',
        b'm s="cr\r\nlf\r" 2\n',
        b'm s="" 3\n',
        b'm s="end \\\\ and \\"q\\"\\\\" 4\n',
    ]
    assert encoded.body == b"".join(expected)
    assert list(encoded.ends) == list(accumulate(len(line) for line in expected))


@pytest.mark.parametrize(
    ("measurement", "column", "value", "row", "where"),
    [
        ("m", "t", "a\nb", 1, "t"),
        ("m", "t", "a\rb", 1, "t"),
        ("m", "k\ney", "v", 1, "k\ney"),
        ("m\n", "t", "v", 0, None),
    ],
)
def test_newlines_in_names_and_tag_values_are_refused_naming_column_and_row(
    measurement: str, column: str, value: str, row: int, where: str | None
) -> None:
    batch = pa.record_batch(
        {"time": pa.array([1, 2], pa.int64()), "s": ["ok", "ok"], column: [None, value]}
    )
    with pytest.raises(LineProtocolError, match="newline") as caught:
        encode_batch(measurement, batch, tags=[column], fields=["s"])
    assert (caught.value.column, caught.value.row) == (where, row)


def test_a_newline_in_a_field_key_is_refused() -> None:
    batch = pa.record_batch({"time": pa.array([1, 2], pa.int64()), "a\rb": [None, 1.0]})
    with pytest.raises(LineProtocolError, match="newline") as caught:
        encode_batch("m", batch, tags=[], fields=["a\rb"])
    assert (caught.value.column, caught.value.row) == ("a\rb", 1)


def test_split_cuts_at_line_ends_not_at_newlines_inside_strings() -> None:
    batch = pa.record_batch(
        {"time": pa.array([1, 2, 3], pa.int64()), "s": ["a\n\n\n", None, "b\nc"]}
    )
    encoded = encode_batch("m", batch, tags=[], fields=["s"])
    pieces = list(encoded.split(16))
    assert [piece.body for piece in pieces] == [b'm s="a\n\n\n" 1\n', b'm s="b\nc" 3\n']
    assert [piece.rows.to_pylist() for piece in pieces] == [[0], [2]]
    assert b"".join(piece.body for piece in encoded.split(1 << 20)) == encoded.body
    with pytest.raises(LineProtocolError, match="longer than") as caught:
        list(encoded.split(10))
    assert caught.value.row == 0


def test_point_times_keep_every_nanosecond() -> None:
    batch = pa.record_batch(
        {"time": pa.array([1_700_000_000_000_000_001, 0], pa.timestamp("ns", tz="UTC"))}
    )
    assert ns_isoformat(point_ns(batch, 0)) == "2023-11-14T22:13:20.000000001Z"
    assert ns_isoformat(point_ns(batch, 1)) == "1970-01-01T00:00:00Z"


def test_a_line_protocol_error_is_a_tierflow_error() -> None:
    assert issubclass(LineProtocolError, TierflowError)


def test_empty_batch() -> None:
    batch = pa.record_batch({"time": pa.array([], pa.int64()), "v": pa.array([], pa.float64())})
    assert encode_batch("m", batch, tags=[], fields=["v"]).body == b""
