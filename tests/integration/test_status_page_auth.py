"""`[server] token` on a live `tierflow run`: a real Prometheus scrapes the guarded `/metrics`
with contrib's commented `authorization:` example switched on (and fails without it), and a
`listen` beyond loopback with neither token nor `public = true` stops `tierflow run` before it
serves anything."""

from __future__ import annotations

import signal
import time
import urllib.error
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._helpers import job
from tests.integration._support import (
    add_tables,
    floor_to,
    free_port,
    http_get,
    processes,
    run_tierflow,
    spawn,
    wait_http,
)
from tests.integration.conftest import ConfigWriter
from tests.integration.test_contrib_prometheus import SCRAPE_CONFIG, Prometheus

TOKEN = "scrape-token-5d1e0b"
TOKEN_ENV = "STATUS_PAGE_SCRAPE_TOKEN"


def switched_on(example: str, credentials: Path) -> dict[str, Any]:
    """contrib's scrape config with its commented `authorization:` block uncommented, reading
    the token from `credentials`."""
    lines = []
    for line in example.splitlines():
        if line.startswith(("    # authorization:", "    #   ")):
            line = line.replace("# ", "", 1)
        lines.append(line)
    config = yaml.safe_load("\n".join(lines))
    (scrape,) = config["scrape_configs"]
    assert scrape["authorization"]["type"] == "Bearer", scrape
    scrape["authorization"]["credentials_file"] = str(credentials)
    return dict(config)


def test_prometheus_scrapes_a_guarded_daemon_with_the_contrib_example(
    db: str,
    write_config: ConfigWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    every = timedelta(seconds=2)
    start = floor_to(datetime.now(UTC) - 10 * every, every)
    port = free_port()
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = add_tables(
        write_config(db, {"live": job(start, every="2s")}),
        {"server": {"listen": f"127.0.0.1:{port}", "token": {"env": TOKEN_ENV}}},
    )
    credentials = tmp_path / "tierflow-token"
    credentials.write_text(TOKEN + "\n")  # Prometheus trims the trailing newline
    scrape = switched_on(SCRAPE_CONFIG.read_text(), credentials)
    scrape["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    scrape.pop("rule_files")
    (guarded,) = scrape["scrape_configs"]
    guarded["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    # The same target without the token: Prometheus must see it refused.
    bare = {"job_name": "tierflow_without_token", "static_configs": guarded["static_configs"]}
    scrape["scrape_configs"].append(bare)
    directory = tmp_path / "prometheus"
    directory.mkdir()
    prometheus = Prometheus(directory, scrape)

    with processes() as spawned:
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        assert wait_http(f"http://127.0.0.1:{port}/healthz", timeout=15, process=daemon)[0] == 200
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 401
        try:
            prometheus.start()
            deadline = time.monotonic() + 30
            while True:
                targets = {
                    t["labels"]["job"]: t for t in prometheus.api("targets")["activeTargets"]
                }
                seen = {name: t["health"] for name, t in targets.items()}
                if seen == {"tierflow": "up", "tierflow_without_token": "down"}:
                    break
                assert time.monotonic() < deadline, targets
                time.sleep(0.5)
            assert "401" in targets["tierflow_without_token"]["lastError"]
            # What it scraped is tierflow's: the job's own series arrived.
            found = prometheus.query('tierflow_job_window_seconds{exported_job="live"}')
            assert [float(item["value"][1]) for item in found] == [2.0]
        finally:
            prometheus.stop()
        code, _ = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.describe()


def test_run_refuses_an_open_listen_beyond_loopback(db: str, write_config: ConfigWriter) -> None:
    start = floor_to(datetime.now(UTC) - timedelta(hours=1), timedelta(minutes=5))
    port = free_port()
    config = add_tables(
        write_config(db, {"live": job(start)}), {"server": {"listen": f"0.0.0.0:{port}"}}
    )
    done = run_tierflow("run", "-c", config, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "[server]" in done.stderr
    assert "reachable from other hosts" in done.stderr
    assert "Traceback" not in done.stderr
    # It stopped before serving anything.
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        http_get(f"http://127.0.0.1:{port}/healthz", timeout=2)
