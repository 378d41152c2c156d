"""Line protocol for InfluxDB 3 (`flavour=V3`), checked against a port of 3.x's own parser
(`tests/lineprotocol3.py`, the `influxdb_line_protocol` crate's grammar): whatever names, tag
values and string values tierflow encodes are read back by that parser exactly as they were.

3.x reads `\\\\` in a name as one backslash where 1.x keeps both: encoded the 1.x way, a tag
value `a\\\\b` would be stored as `a\\b`."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lineprotocol3 import LineError, ParsedLine, parse_lines
from tierflow._lineprotocol import V1, V3, LineProtocolError, check_tag_values, encode_batch

# Names and values made of what line protocol escapes, backslashes above all.
text = st.text(
    st.sampled_from(["a", "\\", ",", "=", " ", '"', "é", "#", "'"]), min_size=1, max_size=8
)
names = text.filter(lambda t: not t.endswith("\\") and not t.startswith("#"))
strings = st.text(st.sampled_from(["a", "\\", '"', "\n", "\r", " ", ",", "="]), max_size=8)


def parsed(body: bytes) -> ParsedLine:
    (line,) = parse_lines(body.decode())
    assert not isinstance(line, LineError), (body, line)
    return line


@settings(max_examples=400, deadline=None)
@given(measurement=names, tag_key=names, tag_value=names, field_key=names, value=strings)
def test_what_3x_reads_is_what_was_encoded(
    measurement: str, tag_key: str, tag_value: str, field_key: str, value: str
) -> None:
    if tag_key == field_key:
        field_key += "_f"  # 3.x refuses a tag and a field of one name in one table
    batch = pa.record_batch(
        {"time": pa.array([7], pa.int64()), tag_key: [tag_value], field_key: [value]}
    )
    encoded = encode_batch(measurement, batch, tags=[tag_key], fields=[field_key], flavour=V3)
    line = parsed(encoded.body)
    assert line.measurement == measurement
    assert line.tags == ((tag_key, tag_value),)
    assert [(key, value_) for key, _, value_ in line.fields] == [(field_key, value)]
    assert line.timestamp == 7


def test_the_1x_spelling_of_a_double_backslash_would_lose_one_on_3x() -> None:
    """Why there are two flavours: the same tag value, encoded for 1.x, reads back changed."""
    batch = pa.record_batch({"time": pa.array([1], pa.int64()), "t": ["a\\\\b"], "f": [1.0]})
    v1 = encode_batch("m", batch, tags=["t"], fields=["f"], flavour=V1)
    v3 = encode_batch("m", batch, tags=["t"], fields=["f"], flavour=V3)
    assert parsed(v1.body).tags == (("t", "a\\b"),)
    assert parsed(v3.body).tags == (("t", "a\\\\b"),)


@pytest.mark.parametrize("where", ["measurement", "tag key", "tag value", "field key"])
def test_a_trailing_backslash_is_refused_naming_it(where: str) -> None:
    bad = "end\\"
    measurement = bad if where == "measurement" else "m"
    tag_key = bad if where == "tag key" else "t"
    tag_value = bad if where == "tag value" else "v"
    field_key = bad if where == "field key" else "f"
    batch = pa.record_batch(
        {"time": pa.array([1], pa.int64()), tag_key: [tag_value], field_key: [1.0]}
    )
    with pytest.raises(LineProtocolError, match="InfluxDB 3 refuses a name or tag value that ends"):
        encode_batch(measurement, batch, tags=[tag_key], fields=[field_key], flavour=V3)


# 3.x reads a tab as whitespace (`is_whitespace_boundary_char`), has no escape for one, and
# skips a line's leading tabs (`trim_leading`), then a `#` there makes the line a comment.
with_tabs = st.text(st.sampled_from(["a", "\t", "#", " ", "\\", ",", "="]), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(measurement=with_tabs, tag_key=with_tabs, tag_value=with_tabs, field_key=with_tabs)
def test_what_3x_would_read_otherwise_is_refused_never_altered(
    measurement: str, tag_key: str, tag_value: str, field_key: str
) -> None:
    if tag_key == field_key:
        field_key += "_f"
    batch = pa.record_batch(
        {"time": pa.array([7], pa.int64()), tag_key: [tag_value], field_key: [1.5]}
    )
    try:
        encoded = encode_batch(measurement, batch, tags=[tag_key], fields=[field_key], flavour=V3)
    except LineProtocolError:
        return
    line = parsed(encoded.body)
    assert (line.measurement, line.tags, line.fields, line.timestamp) == (
        measurement,
        ((tag_key, tag_value),),
        ((field_key, "float", 1.5),),
        7,
    )


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        ("measurement", "\tm"),  # 3.x would store it as "m"
        ("measurement", "\t#m"),  # 3.x would read a comment: the point dropped, 204
        ("measurement", "m\tx"),
        ("tag key", "t\tx"),
        ("tag value", "\tv"),
        ("field key", "f\tx"),
    ],
)
def test_a_tab_in_a_name_or_tag_value_is_refused_naming_it(where: str, bad: str) -> None:
    measurement = bad if where == "measurement" else "m"
    tag_key = bad if where == "tag key" else "t"
    tag_value = bad if where == "tag value" else "v"
    field_key = bad if where == "field key" else "f"
    batch = pa.record_batch(
        {"time": pa.array([1], pa.int64()), tag_key: [tag_value], field_key: [1.0]}
    )
    with pytest.raises(LineProtocolError, match="cannot carry a tab in a "):
        encode_batch(measurement, batch, tags=[tag_key], fields=[field_key], flavour=V3)


def test_an_archived_tag_value_with_a_tab_is_flagged_as_unrestorable_into_3x() -> None:
    values = pa.array(["ok", "a\tb"]).dictionary_encode()
    check_tag_values("t", values, flavour=V1)
    with pytest.raises(LineProtocolError, match="cannot carry a tab in a value of tag 't'"):
        check_tag_values("t", values, flavour=V3)


def test_infinities_3x_holds_are_written_back_as_3x_reads_them() -> None:
    """3.x stores `1e999` as +inf (Rust's f64 parse); an archive of such a point restored into
    3.x must not lose the value (it was left out of its line, silently, when other fields
    were there)."""
    inf = float("inf")
    batch = pa.record_batch(
        {
            "time": pa.array([1, 2, 3], pa.int64()),
            "f": pa.array([inf, -inf, None], pa.float64()),
            "g": pa.array([1, 2, 3], pa.int64()),
        }
    )
    encoded = encode_batch("m", batch, tags=[], fields=["f", "g"], flavour=V3)
    lines = parse_lines(encoded.body.decode())
    assert [line.fields for line in lines if isinstance(line, ParsedLine)] == [
        (("f", "float", inf), ("g", "integer", 1)),
        (("f", "float", -inf), ("g", "integer", 2)),
        (("g", "integer", 3),),
    ]
    # NaN: no line protocol spells it, 3.x's neither; refused rather than left out.
    nan = batch.set_column(1, "f", pa.array([1.0, float("nan"), None], pa.float64()))
    with pytest.raises(LineProtocolError, match="cannot carry NaN") as refused:
        encode_batch("m", nan, tags=[], fields=["f", "g"], flavour=V3)
    assert (refused.value.column, refused.value.row) == ("f", 1)
