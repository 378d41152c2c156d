"""ThrowawayInfluxd against the real `influxd` binary: lifecycle, restarts, crashes, the client."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierflow.testing import InfluxdError, ThrowawayInfluxd
from tierflow.testing import influxd as influxd_module

pytestmark = pytest.mark.integration

POINTS = [
    'cpu,host=a,region=eu usage=0.5,cores=4i,note="x y" 1700000000000000000',
    'cpu,host=b,region=eu usage=1.25,cores=8i,note="z" 1700000010000000000',
    'cpu,host=a,region=us usage=2.75,cores=2i,note="" 1700000020000000000',
]
EXPECTED = [
    {
        "time": 1700000000000000000,
        "host": "a",
        "region": "eu",
        "usage": 0.5,
        "cores": 4,
        "note": "x y",
    },
    {
        "time": 1700000010000000000,
        "host": "b",
        "region": "eu",
        "usage": 1.25,
        "cores": 8,
        "note": "z",
    },
    {
        "time": 1700000020000000000,
        "host": "a",
        "region": "us",
        "usage": 2.75,
        "cores": 2,
        "note": "",
    },
]


@pytest.fixture
def server() -> Iterator[ThrowawayInfluxd]:
    with ThrowawayInfluxd() as running:
        yield running


def _seed(server: ThrowawayInfluxd) -> None:
    server.execute('CREATE DATABASE "metrics"')
    server.write(POINTS, db="metrics")


def _ordered(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(rows, key=lambda row: (row["time"], str(row["host"])))


def test_start_answers_ping_on_loopback_with_files_under_data_dir(server: ThrowawayInfluxd) -> None:
    with urllib.request.urlopen(server.url + "/ping", timeout=5) as response:
        assert response.status == 204
        assert response.headers["X-Influxdb-Version"].startswith("1.")
    assert server.url.startswith("http://127.0.0.1:")
    assert {"meta", "data", "influxd.toml", "influxd.log"} <= {
        p.name for p in server.data_dir.iterdir()
    }


def test_written_points_come_back_with_tags_fields_and_times(server: ThrowawayInfluxd) -> None:
    _seed(server)

    grouped = server.series_points('SELECT * FROM "cpu" GROUP BY *', db="metrics")
    ungrouped = server.series_points('SELECT * FROM "cpu"', db="metrics")

    assert _ordered(grouped) == EXPECTED
    assert ungrouped == EXPECTED  # without GROUP BY the tags arrive as columns, in time order


def test_write_accepts_str_and_bytes_and_other_precisions(server: ThrowawayInfluxd) -> None:
    server.execute('CREATE DATABASE "p"')
    server.write("m v=1 1\nm v=2 2\n", db="p", precision="s")
    server.write(b"m v=3 3000\r\n", db="p", precision="ms")
    server.write(["m v=4 1"], db="p", precision="h")

    times = [row["time"] for row in server.series_points('SELECT "v" FROM "m"', db="p")]

    assert times == [1_000_000_000, 2_000_000_000, 3_000_000_000, 3_600_000_000_000]
    with pytest.raises(ValueError, match="precision"):
        server.write("m v=5 5", db="p", precision="sec")


def test_write_splits_large_bodies(
    server: ThrowawayInfluxd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(influxd_module, "_WRITE_CHUNK_BYTES", 1_000)
    server.execute('CREATE DATABASE "big"')

    server.write((f"m,k=k{i % 7} v={i}i {i}" for i in range(500)), db="big")

    (result,) = server.query('SELECT count("v") FROM "m"', db="big")
    assert result["series"][0]["values"] == [[0, 500]]


def test_errors_raise_runtime_error_with_the_server_message(server: ThrowawayInfluxd) -> None:
    _seed(server)
    with pytest.raises(RuntimeError, match="database not found: nowhere"):
        server.query('SELECT * FROM "cpu"', db="nowhere")
    with pytest.raises(RuntimeError, match=r"HTTP 400.*error parsing query"):
        server.query("SELEKT 1", db="metrics")
    with pytest.raises(RuntimeError, match="HTTP 404"):
        server.write("cpu usage=1", db="nowhere")
    with pytest.raises(RuntimeError, match="unable to parse"):
        server.write("cpu usage=", db="metrics")


def test_restart_on_a_given_data_dir_keeps_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "influx"
    with ThrowawayInfluxd(data_dir=data_dir) as first:
        _seed(first)

    assert (data_dir / "meta").is_dir()  # a caller's data_dir outlives stop()
    with ThrowawayInfluxd(data_dir=data_dir) as second:
        rows = second.series_points('SELECT * FROM "cpu" GROUP BY *', db="metrics")
    assert _ordered(rows) == EXPECTED


def test_kill_keeps_the_files_and_start_replays_the_wal() -> None:
    server = ThrowawayInfluxd().start()
    try:
        _seed(server)
        data_dir = server.data_dir
        process = server.process
        assert process is not None

        server.kill()

        assert process.returncode == -9
        assert server.process is None
        assert (data_dir / "wal").is_dir()
        server.start()
        assert server.data_dir == data_dir
        rows = server.series_points('SELECT * FROM "cpu" GROUP BY *', db="metrics")
        assert _ordered(rows) == EXPECTED
    finally:
        server.stop()
    assert not data_dir.exists()  # the temp dir goes with stop(), even after a kill


def test_start_retries_with_new_ports_when_another_influxd_has_the_port(
    server: ThrowawayInfluxd, monkeypatch: pytest.MonkeyPatch
) -> None:
    squatter_port = int(server.url.rsplit(":", 1)[1])
    real_free_ports = influxd_module._free_ports
    picks: list[list[int]] = []

    def first_pick_taken(count: int) -> list[int]:
        ports = (
            [squatter_port, *real_free_ports(count - 1)] if not picks else real_free_ports(count)
        )
        picks.append(ports)
        return ports

    monkeypatch.setattr(influxd_module, "_free_ports", first_pick_taken)
    with ThrowawayInfluxd() as second:
        assert len(picks) == 2
        assert second.url == f"http://127.0.0.1:{picks[1][0]}"
        assert second.process is not None
        (result,) = second.query("SHOW DIAGNOSTICS FOR 'system'")
        assert result["series"][0]["values"][0][0] == second.process.pid


def test_start_gives_up_after_three_bind_failures_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    real_free_ports = influxd_module._free_ports
    monkeypatch.setattr(
        influxd_module, "_free_ports", lambda count: [taken_port, *real_free_ports(count - 1)]
    )
    server = ThrowawayInfluxd()

    with taken, pytest.raises(RuntimeError, match=r"address already in use(.|\n)*3 tries"):
        server.start()

    assert server.process is None
    with pytest.raises(RuntimeError, match="no data directory"):
        _ = server.data_dir


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFLOW_INFLUXD", raising=False)
    with pytest.raises(RuntimeError, match="apt-get install influxdb"):
        ThrowawayInfluxd(binary="/nonexistent/influxd").start()
    monkeypatch.setenv("TIERFLOW_INFLUXD", "/nonexistent/influxd")
    with pytest.raises(RuntimeError, match="/nonexistent/influxd"):
        ThrowawayInfluxd().start()


def test_binary_that_exits_at_once_reports_its_status(tmp_path: Path) -> None:
    fake = tmp_path / "fake-influxd"
    fake.write_text("#!/bin/sh\necho 'run: something broke' >&2\nexit 3\n")
    fake.chmod(0o755)

    with pytest.raises(InfluxdError, match=r"status 3(.|\n)*something broke"):
        ThrowawayInfluxd(binary=str(fake), data_dir=tmp_path / "d").start()


def test_startup_timeout_kills_the_process(tmp_path: Path) -> None:
    fake = tmp_path / "silent-influxd"
    pid_file = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\necho 'still booting'\nexec sleep 60\n")
    fake.chmod(0o755)
    server = ThrowawayInfluxd(binary=str(fake), data_dir=tmp_path / "d", startup_timeout=0.5)

    with pytest.raises(InfluxdError, match=r"within 0.5 s(.|\n)*still booting"):
        server.start()
    assert server.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_env_var_chooses_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = tmp_path / "influxd-wrapper"
    marker = tmp_path / "wrapper-ran"
    wrapper.write_text(f'#!/bin/sh\ntouch {marker}\nexec influxd "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("TIERFLOW_INFLUXD", str(wrapper))

    with ThrowawayInfluxd() as server:
        server.execute('CREATE DATABASE "w"')

    assert marker.exists()
