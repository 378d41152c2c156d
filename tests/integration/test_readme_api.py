"""The README's Python API example, run as written against a throwaway influxd."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from tierflow.testing import ThrowawayInfluxd

README = Path(__file__).parents[2] / "README.md"


def example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_example_runs(influxd: ThrowawayInfluxd) -> None:
    code = example()
    assert "http://127.0.0.1:8086" in code
    influxd.query("CREATE DATABASE plant")
    # Two points in the first window, [00:00, 00:05) on 2026-11-01.
    influxd.write(
        ["sensor temp=20 1793491260000000000", "sensor temp=22 1793491320000000000"], db="plant"
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.replace("http://127.0.0.1:8086", influxd.url), "README", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert lines[0] == str(["succeeded"] * 1)
    assert lines[1] == "sensor_5m 2026-11-01 01:00:00+00:00 0"
    try:
        found = influxd.query("SELECT temp_mean, temp_max FROM sensor", db="plant_5m", epoch="s")
        assert found[0]["series"][0]["values"] == [[1793491200, 21.0, 22.0]]
    finally:
        influxd.query("DROP DATABASE plant")
        influxd.query("DROP DATABASE plant_5m")
