"""The live 3.x suite's wiring, tested: with `TIERFLOW_TEST_INFLUXDB3_URL`/`…_TOKEN` pointing at
a 3.x server in another process (here the stand-in, `_influx3_serve`), the live cases of the
engine contract, the downsample-vs-`SELECT … INTO` comparison and the archive/restore and
1.x → 3.x relay tests run (none skipped) and pass, tierflow's own requests reach that server,
and every database they made is deleted afterwards.

A run of pytest inside a test (it starts its own influxd): it selects two cases of the
contract (a downsample, and `list_measurements` on a database another tier shares), the eight
seeds of the downsample comparison, and the two transfers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration._influx3_servers import LIVE_ENV

ROOT = Path(__file__).parents[2]
SELECTED = [
    "tests/integration/test_engine_contract.py"
    "::test_every_window_series_and_field_equals_the_raw_points[influxdb3]",
    "tests/integration/test_engine_contract.py"
    "::test_the_measurements_listed_are_those_with_points_in_the_window_of_the_tier[influxdb3]",
    "tests/integration/test_sql_downsample.py::test_downsample_on_3x_equals_select_into_on_influxd",
    "tests/integration/test_influx3_transfers.py"
    "::test_a_3x_tier_archives_point_for_point_and_restores_into_a_fresh_database",
    "tests/integration/test_influx3_transfers.py"
    "::test_a_relay_from_1x_into_3x_writes_what_select_into_writes",
]


def test_the_live_3x_suite_runs_tierflow_against_the_server_it_is_given(tmp_path: Path) -> None:
    serve = subprocess.Popen(
        [sys.executable, "-m", "tests.integration._influx3_serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert serve.stdout is not None
    try:
        server = json.loads(serve.stdout.readline())
        env = {**os.environ, LIVE_ENV[0]: server["url"], LIVE_ENV[1]: server["token"]}
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                f"--basetemp={tmp_path / 'inner'}",
                "-k",
                "live or (influxdb3 and not standin)",
                *SELECTED,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
        seen = json.loads(serve.communicate("", timeout=30)[0])
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()

    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # 2 contract cases, 8 seeds of the downsample comparison, archive/restore, the relay.
    assert re.fullmatch(r"=* ?12 passed, \d+ deselected in .*", summary), summary
    requests = [tuple(r) for r in seen["requests"]]
    tierflow = {(m, p) for m, p, _, _, agent in requests if "aiohttp" in agent}
    assert {("POST", "/api/v3/query_sql"), ("POST", "/api/v3/write_lp")} <= tierflow, tierflow
    made = {db for _, p, db, status, _ in requests if p == "/api/v3/write_lp" and status == 204}
    assert made
    assert all(db.startswith("tierflow_test_") for db in made), made
    assert seen["databases"] == ["_internal"]  # all of them deleted
