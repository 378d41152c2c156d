"""The TSM oracle (tests/tsm_oracle.py) returns exactly what was written: value, bits and type.

Points go in as raw line protocol bytes POSTed to `/write`, as curl would send them, so neither
tierflow's encoder nor the test client's line splitting touches them; the expected values are
written out by hand. The same data is read from the WAL alone, from TSM files alone after a
flush, and from both after overwrites and deletes on top of the flushed files.
"""

from __future__ import annotations

import math
import urllib.parse
import urllib.request
from pathlib import Path

from tests.tsm_oracle import FieldType, FieldValue, StoredPoint, flush_to_tsm, stored_points
from tierflow.testing import ThrowawayInfluxd

T1 = 1_577_836_800_000_000_000  # 2020-01-01T00:00:00Z
LATER = T1 + 30 * 24 * 3600 * 10**9  # a month on: another 7-day shard of `autogen`

MEASUREMENT = "hostile m,x"
# A tag key and value with every character the series key escapes, and a tag named like a field.
TAGS = (("same", "tagside"), ("tag,key with=eq", "v,a l=ue"))
SERIES = rb"hostile\ m\,x,same=tagside,tag\,key\ with\=eq=v\,a\ l\=ue"

BODY = b"\n".join(
    [
        SERIES + b" n=1i " + str(T1).encode(),
        SERIES + b" n=9007199254740993i " + str(T1 + 1).encode(),
        SERIES + b" lo=-9223372036854775808i,hi=9223372036854775807i " + str(T1).encode(),
        SERIES + b" z=-0.0,tiny=5e-324,tenth=0.1 " + str(T1).encode(),
        # In a quoted field value \" and \\ are escapes; a raw LF or CR is stored as it is.
        SERIES + b' quoted="q\\"uote b\\\\ack nl\nline crlf\r\n end\\\\" ' + str(T1).encode(),
        SERIES + b' empty="",same="fieldside" ' + str(T1).encode(),
        SERIES + ' uni="\u00fcn\u00ef\u2028" '.encode() + str(T1).encode(),
        SERIES + b" yes=true,no=F " + str(T1).encode(),
        SERIES + b" doomed=1.5 " + str(T1 + 2).encode(),
        # The same field as a float in a later shard: each shard keeps its own type.
        SERIES + b" n=1.5 " + str(LATER).encode(),
    ]
)

WRITTEN: list[tuple[str, int, FieldType, FieldValue]] = [
    ("n", T1, "integer", 1),
    ("n", T1 + 1, "integer", 9_007_199_254_740_993),
    ("lo", T1, "integer", -(2**63)),
    ("hi", T1, "integer", 2**63 - 1),
    ("z", T1, "float", -0.0),
    ("tiny", T1, "float", 5e-324),
    ("tenth", T1, "float", 0.1),
    ("quoted", T1, "string", 'q"uote b\\ack nl\nline crlf\r\n end\\'),
    ("empty", T1, "string", ""),
    ("same", T1, "string", "fieldside"),
    ("uni", T1, "string", "\u00fcn\u00ef\u2028"),
    ("yes", T1, "boolean", True),
    ("no", T1, "boolean", False),
    ("doomed", T1 + 2, "float", 1.5),
    ("n", LATER, "float", 1.5),
]


def exact(rows: list[tuple[str, int, FieldType, FieldValue]]) -> list[tuple[object, ...]]:
    """Hand-written rows in the oracle's exact form (floats as bits), sorted as it sorts."""
    points = [StoredPoint(MEASUREMENT, TAGS, f, t, k, v, shard=0) for f, t, k, v in rows]
    return sorted(p.exact() for p in points)


def post_raw(server: ThrowawayInfluxd, db: str, body: bytes) -> None:
    """POST `body` to /write unchanged, as `curl --data-binary` would."""
    query = urllib.parse.urlencode({"db": db, "rp": "autogen", "precision": "ns"})
    request = urllib.request.Request(f"{server.url}/write?{query}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204


def nonempty(root: Path, pattern: str) -> list[Path]:
    return [p for p in root.rglob(pattern) if p.stat().st_size > 0]


def test_every_value_comes_back_exactly_from_wal_and_from_tsm(
    influxd: ThrowawayInfluxd, db: str
) -> None:
    post_raw(influxd, db, BODY)
    # Nothing flushed yet: everything the oracle sees, it read from the WAL.
    assert not list((influxd.tsm_dir / db).rglob("*.tsm"))
    from_wal = stored_points(influxd, db)
    assert [p.exact() for p in from_wal] == exact(WRITTEN)

    by_field = {(p.field, p.time): p for p in from_wal}
    assert math.copysign(1.0, float(by_field["z", T1].value)) == -1.0
    assert by_field["tiny", T1].value == math.ulp(0.0)  # the smallest subnormal
    assert by_field["n", T1].shard == by_field["n", T1 + 1].shard != by_field["n", LATER].shard
    assert by_field["n", LATER].type == "float"

    flush_to_tsm(influxd, db)
    # Everything is in TSM files now and no WAL segment holds an entry.
    assert nonempty(influxd.tsm_dir / db / "autogen", "*.tsm")
    assert not nonempty(influxd.wal_dir / db / "autogen", "*.wal")
    assert [p.exact() for p in stored_points(influxd, db)] == [p.exact() for p in from_wal]
    assert stored_points(influxd, db) == from_wal  # shards too


def test_later_writes_win_and_deletes_remove_from_tsm_and_wal(
    influxd: ThrowawayInfluxd, db: str
) -> None:
    post_raw(influxd, db, BODY)
    flush_to_tsm(influxd, db)
    # On top of the TSM files: an overwrite (the WAL wins over TSM on one timestamp), a point
    # written and deleted in the WAL alone, and a delete of a flushed point (a tombstone).
    post_raw(influxd, db, SERIES + b" n=-7i " + str(T1).encode())
    post_raw(influxd, db, SERIES + b" gone=2.5 " + str(T1 + 3).encode())
    influxd.execute(
        f'DELETE FROM "{MEASUREMENT}" WHERE time >= {T1 + 2} AND time <= {T1 + 3}', db=db
    )
    assert nonempty(influxd.wal_dir / db / "autogen", "*.wal")
    assert list((influxd.tsm_dir / db).rglob("*.tombstone"))

    now = [row for row in WRITTEN if row[0] != "doomed"]
    now[0] = ("n", T1, "integer", -7)
    assert [p.exact() for p in stored_points(influxd, db)] == exact(now)

    flush_to_tsm(influxd, db)
    assert [p.exact() for p in stored_points(influxd, db)] == exact(now)
