"""Installing without the repo: the wheel built from this tree, installed with an extra into a
clean virtualenv (its dependencies from the package index), runs `tierflow --version`,
`validate`, `plan` and `run-once` on a real influxd, and imports from its own site-packages,
holding every file of package data the source tree has (templates, SQL, migrations).

Marked `wheel` (`-m "not wheel"` leaves it out, e.g. offline): pip needs the index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration._helpers import (
    assert_tier,
    expected_tier,
    grid,
    job,
    telemetry,
    write_points,
)
from tests.integration._support import floor_to
from tests.integration.conftest import WARM_RP, ConfigWriter, read_tier
from tierflow.testing import ThrowawayInfluxd

pytestmark = [pytest.mark.integration, pytest.mark.wheel]

REPO = Path(__file__).parents[2]
PACKAGE = REPO / "src" / "tierflow"
EXTRA = "postgres"
FIVE_MINUTES = timedelta(minutes=5)


def package_data(files: list[str]) -> set[str]:
    """The files of the package that are not Python source (nor compiled)."""
    return {f for f in files if not f.endswith((".py", ".pyc")) and "__pycache__" not in f}


def run(*argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # Nothing of the repo's: no PYTHONPATH, no TIERFLOW_* settings, and a directory of its own.
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("TIERFLOW_")
    }
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_built_wheel_installs_in_a_clean_venv_and_runs(
    tmp_path: Path, influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    began = time.monotonic()
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO, cwd=work)
    (wheel,) = dist.glob("tierflow-*.whl")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert wheel.name == f"tierflow-{version}-py3-none-any.whl"
    source = package_data([str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if p.is_file()])
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    packed = package_data([n.removeprefix("tierflow/") for n in names if n.startswith("tierflow/")])
    assert source, "the source tree has no package data: this check would prove nothing"
    assert packed == source
    built = time.monotonic() - began

    run(sys.executable, "-m", "venv", venv, cwd=work)
    python, tierflow = venv / "bin" / "python", venv / "bin" / "tierflow"
    run(python, "-m", "pip", "install", "-q", f"{wheel}[{EXTRA}]", cwd=work)
    installed = time.monotonic() - began - built

    assert run(tierflow, "--version", cwd=work).stdout.strip() == f"tierflow {version}"
    where = run(
        python,
        "-c",
        "import pathlib, tierflow, psycopg; print(pathlib.Path(tierflow.__file__).parent)",
        cwd=work,
    ).stdout.strip()
    home = Path(where)
    assert home.is_relative_to(venv), f"tierflow imported from {home}, not the clean venv"
    shipped = [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()]
    assert package_data(shipped) == source

    # The installed command on a real server: its templates render, its SQLite migrations run.
    start = floor_to(datetime.now(UTC), FIVE_MINUTES) - timedelta(hours=2)
    points = telemetry(41, start)
    write_points(influxd, db, points)
    config = write_config(db, {"down": job(start, catchup_chunk="1h")}, directory=work)
    assert "valid" in run(tierflow, "validate", "-c", config, cwd=work).stdout
    now = start + timedelta(hours=2)
    at = now.isoformat().replace("+00:00", "Z")
    plan = run(tierflow, "plan", "-c", config, "--now", at, "--json", cwd=work).stdout
    (planned,) = json.loads(plan)["jobs"]
    assert (planned["windows_due"], planned["queries"]) == (24, 2)
    assert "SELECT" in planned["batches"][0]["query"]  # rendered from the shipped template
    report = json.loads(
        run(tierflow, "run-once", "-c", config, "--now", at, "--json", cwd=work).stdout
    )
    assert report["failed"] == 0
    spans = grid(start, FIVE_MINUTES, 24)
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, spans))
    took = time.monotonic() - began
    print(f"wheel built in {built:.1f} s, venv + install {installed:.1f} s, all {took:.1f} s")
