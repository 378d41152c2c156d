"""Line-protocol encoding from Arrow batches: expected lines written by hand from the rules."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tierflow._lineprotocol import LineProtocolError, encode_batch


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
            "v": [1.0, None, float("nan"), float("inf")],
            "n": pa.array([None, 5, None, None], pa.int64()),
        }
    )
    encoded = encode_batch("m", batch, tags=["a", "b"], fields=["v", "n"])
    # Row 3 holds only NaN and row 4 only inf: nothing line protocol can carry, so dropped.
    assert lines(encoded.body) == ["m,a=x v=1 1", "m,b=z n=5i 2"]
    assert (encoded.points, encoded.dropped) == (2, 2)


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


@pytest.mark.parametrize(("column", "value"), [("t", "a\nb"), ("t", "a\rb"), ("s", "x\ny")])
def test_newlines_are_refused(column: str, value: str) -> None:
    batch = pa.record_batch(
        {"time": pa.array([1], pa.int64()), "t": ["ok"], "s": ["ok"], column: [value]}
    )
    with pytest.raises(LineProtocolError, match="newline"):
        encode_batch("m", batch, tags=["t"], fields=["s"])


def test_empty_batch() -> None:
    batch = pa.record_batch({"time": pa.array([], pa.int64()), "v": pa.array([], pa.float64())})
    assert encode_batch("m", batch, tags=[], fields=["v"]).body == b""
