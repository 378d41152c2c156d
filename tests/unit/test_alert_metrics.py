"""The metrics contrib/'s alerting rules and dashboard read: counters that exist at zero before
anything happens, the job's window and offset, the last success per job, and readiness."""

from __future__ import annotations

import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeEngine
from tests.unit.test_runner import NOW, make_config, make_runner
from tierflow._config import ServerConfig
from tierflow._daemon import MetricsServer
from tierflow._errors import QueryError
from tierflow._metrics import OUTCOMES
from tierflow._state import RunStatus


def test_outcomes_are_the_statuses_a_run_ends_in() -> None:
    assert set(OUTCOMES) == {s.value for s in RunStatus} - {RunStatus.RUNNING.value}


def test_counters_exist_at_zero_before_anything_runs() -> None:
    runner, _, _ = make_runner()
    registry = runner.metrics.registry
    for outcome in OUTCOMES:
        labels = {"job": "cpu", "status": outcome}
        assert registry.get_sample_value("tierflow_window_runs_total", labels) == 0
    assert registry.get_sample_value("tierflow_windows_rechecked_total", {"job": "cpu"}) == 0
    assert registry.get_sample_value("tierflow_query_retries_total", {"connection": "plant"}) == 0


async def test_status_sets_the_window_and_offset_and_a_success_its_time() -> None:
    # Hourly windows from START, the fourth fails; the clock stands at NOW (START + 5h).
    runner, _, _ = make_runner(
        make_config(offset="90s"), engine=FakeEngine(failures={3: QueryError("no")})
    )
    registry = runner.metrics.registry
    assert registry.get_sample_value("tierflow_window_last_success_timestamp_seconds") is None
    await runner.run_due(NOW)
    await runner.status(NOW)
    job = {"job": "cpu"}
    assert registry.get_sample_value("tierflow_job_window_seconds", job) == 3600
    assert registry.get_sample_value("tierflow_job_offset_seconds", job) == 90
    success = registry.get_sample_value("tierflow_window_last_success_timestamp_seconds", job)
    assert success == NOW.timestamp()
    failed = registry.get_sample_value(
        "tierflow_window_runs_total", {"job": "cpu", "status": "failed"}
    )
    assert failed == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape_ready(url: str) -> float | None:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tierflow_ready":
                return float(sample.value)
    return None


async def test_each_scrape_refreshes_the_readiness_gauge() -> None:
    engine = FakeEngine()
    runner, _, _ = make_runner(engine=engine)
    port = free_port()
    server = MetricsServer(runner, ServerConfig(listen=f"127.0.0.1:{port}"))
    await server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert await scrape_ready(url) == 1
        engine.closed = True  # its ping now fails: the connection does not answer
        assert await scrape_ready(url) == 0
        engine.closed = False
        assert await scrape_ready(url) == 1
    finally:
        await server.stop()


def test_forgetting_a_connection_drops_every_series_of_it_and_only_those() -> None:
    from tierflow._metrics import Metrics

    metrics = Metrics()
    for name in ("gone", "kept"):
        metrics.declare_connection(name)
        metrics.circuit_state.labels(name).set(1)
        metrics.query_duration.labels(name, "query").observe(0.1)
        metrics.query_duration.labels(name, "execute").observe(0.2)
        metrics.payload_bytes.labels(name, "sent").inc(10)
        metrics.payload_bytes.labels(name, "received").inc(20)
    metrics.forget_connection("gone")
    metrics.forget_connection("never-seen")  # nothing to drop: no error
    families = text_string_to_metric_families(metrics.render().decode())
    connections = [
        (family.name, sample.labels["connection"])
        for family in families
        for sample in family.samples
        if "connection" in sample.labels
    ]
    assert {c for _, c in connections} == {"kept"}
    assert {name for name, _ in connections} >= {
        "tierflow_circuit_state",
        "tierflow_query_retries",
        "tierflow_query_duration_seconds",
        "tierflow_payload_bytes",
    }
