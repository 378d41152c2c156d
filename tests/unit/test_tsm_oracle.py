"""The TSM oracle's own rules: when a missing binary skips or fails, how records are applied."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.tsm_oracle import TSMDUMP_ENV_VAR, StoredPoint, merge_records, require_tsmdump


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def write(shard: str, field: str, times: list[int], kind: str, values: list[Any]) -> dict[str, Any]:
    return {
        "op": "write",
        "shard": shard,
        "source": "test",
        "key": b64(f"m,t=a#!~#{field}"),
        "measurement": b64("m"),
        "tags": [[b64("t"), b64("a")]],
        "field": b64(field),
        "type": kind,
        "times": times,
        "values": values,
    }


def delete(shard: str, field: str, low: int, high: int) -> dict[str, Any]:
    keys = [b64(f"m,t=a#!~#{field}")]
    return {"op": "delete", "shard": shard, "source": "test", "keys": keys, "min": low, "max": high}


def bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def test_a_missing_binary_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(TSMDUMP_ENV_VAR, str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="scripts/bootstrap"):
        require_tsmdump()


def test_a_missing_binary_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(TSMDUMP_ENV_VAR, str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not built"):
        require_tsmdump()


def test_later_records_win_and_deletes_remove_only_what_came_before() -> None:
    points = merge_records(
        [
            write("1", "f", [1, 2, 3], "integer", [10, 20, 30]),
            write("1", "f", [2], "integer", [21]),
            delete("1", "f", 3, 9),
            write("1", "f", [4], "integer", [40]),
            delete("2", "f", 0, 9),  # another shard: touches nothing here
        ]
    )
    assert [(p.time, p.value) for p in points] == [(1, 10), (2, 21), (4, 40)]


def test_values_keep_their_type_and_bits_and_shards_stay_apart() -> None:
    points = merge_records(
        [
            write("1", "f", [1], "integer", [2**63 - 1]),
            write("2", "f", [9], "float", [bits(-0.0)]),
            write("2", "s", [9], "string", [b64('a"\\\n')]),
            write("2", "b", [9], "boolean", [False]),
        ]
    )
    assert [(p.field, p.shard, p.type, p.value) for p in points] == [
        ("b", 2, "boolean", False),
        ("f", 1, "integer", 2**63 - 1),
        ("f", 2, "float", -0.0),
        ("s", 2, "string", 'a"\\\n'),
    ]
    negative_zero = StoredPoint("m", (("t", "a"),), "f", 9, "float", -0.0, shard=2)
    assert points[2] == negative_zero
    assert points[2] != StoredPoint("m", (("t", "a"),), "f", 9, "float", 0.0, shard=2)
    assert points[1] != StoredPoint("m", (("t", "a"),), "f", 1, "float", float(2**63 - 1), 1)
