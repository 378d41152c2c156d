"""`tierflow run`, the daemon, as a real process against a real influxd: it runs windows as they
come due on the schedule (and catches up on old ones in coalesced queries), serves /healthz,
/readyz and /metrics, logs JSON lines, and on SIGTERM lets windows in flight finish within the
grace period or records them abandoned, then exits 0.

What the warm tier should hold is computed in plain Python from the points the test wrote.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration._helpers import (
    Point,
    assert_tier,
    expected_tier,
    grid,
    job,
    telemetry,
    write_points,
)
from tests.integration._support import (
    SlowProxy,
    Tierflow,
    add_tables,
    ceil_to,
    floor_to,
    free_port,
    http_get,
    ok_json,
    parse_metrics,
    parse_time,
    processes,
    read_state,
    rfc3339,
    run_tierflow,
    sample,
    spawn,
    wait_http,
)
from tests.integration.conftest import WARM_RP, ConfigWriter, read_tier
from tierflow.testing import ThrowawayInfluxd

SECOND = timedelta(seconds=1)
FIVE_MINUTES = timedelta(minutes=5)
PROMISED_METRICS = {
    "tierflow_window_runs_total": "counter",
    "tierflow_window_run_duration_seconds": "histogram",
    "tierflow_watermark_lag_seconds": "gauge",
    "tierflow_windows_pending": "gauge",
    "tierflow_query_retries_total": "counter",
    "tierflow_query_duration_seconds": "histogram",
    "tierflow_payload_bytes_total": "counter",
}
WINDOW_EVENT_KEYS = {"job", "window_start", "window_stop", "run_id", "attempt"}


def upstream(influxd: ThrowawayInfluxd) -> tuple[str, int]:
    host, port = influxd.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def history(config: Path, job_name: str) -> list[dict[str, Any]]:
    body = ok_json(run_tierflow("history", job_name, "-c", config, "--json", "--limit", "10000"))
    return list(reversed(body["attempts"]))  # oldest first


def json_lines(process: Tierflow) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be one JSON object (stderr is not a terminal)."""
    events = []
    for text in process.stderr:
        body = json.loads(text)
        assert isinstance(body, dict), text
        assert isinstance(body.get("event"), str), text
        events.append(body)
    return events


# -- a writer that writes in real time -------------------------------------------------------


@dataclass
class LiveWriter:
    """Writes a point per series every ~100 ms, stamped with the wall clock, and remembers each
    point and how late it reached the server."""

    influxd: ThrowawayInfluxd
    db: str
    seed: int
    points: list[Point] = field(default_factory=list)
    worst_delay_ns: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def _write(self) -> None:
        rng = random.Random(self.seed)
        series = [(("host", "a"), ("site", "x")), (("host", "b"), ("site", "x")), (("host", "c"),)]
        while not self._stop.is_set():
            base = time.time_ns()
            batch = [
                Point(
                    "sensor",
                    tags,
                    base + i,
                    {"temp": rng.uniform(-10, 40), "errors": rng.randint(0, 5)}
                    if rng.random() < 0.8
                    else {"errors": rng.randint(0, 5)},
                )
                for i, tags in enumerate(series)
                if rng.random() < 0.9
            ]
            write_points(self.influxd, self.db, batch)
            self.worst_delay_ns = max(self.worst_delay_ns, time.time_ns() - base)
            self.points += batch
            self._stop.wait(rng.uniform(0.05, 0.15))


LIVE_AGGREGATES = {"temp": ["mean", "max", "first", "count"], "errors": ["sum"]}


def test_a_live_daemon_runs_each_window_on_time_serves_metrics_and_stops_on_sigterm(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    every, offset = 2 * SECOND, timedelta(milliseconds=500)
    start = ceil_to(datetime.now(UTC) + SECOND, every)
    spec = job(start, every="2s", offset="500ms", aggregates=LIVE_AGGREGATES)
    port = free_port()
    config = add_tables(
        write_config(db, {"live": spec}),
        {"scheduler": {"grace": "5s"}, "server": {"listen": f"127.0.0.1:{port}"}},
    )
    base = f"http://127.0.0.1:{port}"
    writer = LiveWriter(influxd, db, seed=11)
    writer.start()
    try:
        with processes() as spawned:
            daemon = spawn("run", "-c", config, log_level="info")
            spawned.append(daemon)
            assert wait_http(f"{base}/healthz", timeout=15, process=daemon)[0] == 200
            cpu_before, up = daemon.cpu_seconds(), time.monotonic()
            time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds() + 4 * 2 + 0.7))
            healthz = http_get(f"{base}/healthz")
            readyz = http_get(f"{base}/readyz")
            metrics = http_get(f"{base}/metrics")
            cpu, alive = daemon.cpu_seconds() - cpu_before, time.monotonic() - up
            code, stopped_in = daemon.stop(signal.SIGTERM)
    finally:
        writer.stop()

    assert code == 0, daemon.describe()
    assert stopped_in < 5, f"SIGTERM to exit took {stopped_in:.1f} s, grace is 5 s"
    # Sleeping until the next window costs no CPU; polling would (even every 1 ms it takes a
    # third of a core here, against a few percent for the real work).
    assert cpu < 0.15 * alive, f"{cpu:.2f} s of CPU in {alive:.1f} s once up"

    assert healthz[0] == 200
    assert readyz[0] == 200
    assert json.loads(readyz[1]) == {
        "ready": True,
        "checks": {"state": "ok", "connection:plant": "ok"},
    }
    status, text = metrics
    assert status == 200
    for name, kind in PROMISED_METRICS.items():
        assert f"# TYPE {name} {kind}\n" in text, f"{name} ({kind}) is not exposed"
    _, samples = parse_metrics(text)
    outcomes = {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "tierflow_window_runs_total"
    }
    # Every outcome is exported from the start, at zero; only successes happened.
    assert outcomes.keys() == {"succeeded", "failed", "abandoned", "skipped"}, outcomes
    assert {k for k, v in outcomes.items() if v} == {"succeeded"}, f"{outcomes}\n{daemon.stderr}"
    runs = outcomes["succeeded"]
    assert runs >= 3
    batches = sample(samples, "tierflow_window_run_duration_seconds_count", job="live")
    assert 1 <= batches <= runs, text
    assert 0 <= sample(samples, "tierflow_watermark_lag_seconds", job="live") <= 6
    assert sample(samples, "tierflow_windows_pending", job="live") in {0, 1}
    queries = sample(
        samples, "tierflow_query_duration_seconds_count", connection="plant", kind="execute"
    )
    assert batches <= queries <= batches + 1, text  # one may be in flight
    retries = ("tierflow_query_retries_total", frozenset({("connection", "plant")}))
    assert samples.get(retries, 0) == 0, daemon.stderr  # a healthy server needs none
    for direction in ("sent", "received"):
        assert (
            sample(samples, "tierflow_payload_bytes_total", connection="plant", direction=direction)
            > 0
        )

    # Every window from the first to the watermark ran once, on time, and holds exactly the
    # aggregates of what the writer wrote; nothing past the watermark was written.
    assert writer.worst_delay_ns < offset // timedelta(microseconds=1) * 1000, (
        "the test's writer was too slow for the offset: its points may have arrived late"
    )
    state = config.parent / "state.db"
    watermark, ledger, _ = read_state(state, "live")
    assert watermark is not None
    count = (watermark - start) // every
    assert count >= runs
    spans = grid(start, every, count)
    assert [(row.start, row.stop) for row in ledger] == spans
    expected = expected_tier(writer.points, spans, aggregates=LIVE_AGGREGATES)
    assert len(expected) == 3 * count  # every series has points in every window
    assert_tier(read_tier(influxd, db, WARM_RP), expected)

    (job_status,) = ok_json(
        run_tierflow("status", "-c", config, "--json", "--now", rfc3339(watermark + offset))
    )["jobs"]
    assert job_status["watermark"] == rfc3339(watermark)
    assert (job_status["failed_windows"], job_status["pending_windows"]) == (0, 0)
    assert job_status["last_status"] == "succeeded"
    attempts = history(config, "live")
    assert [(parse_time(a["start"]), parse_time(a["stop"])) for a in attempts] == spans
    for attempt in attempts:
        assert (attempt["status"], attempt["attempt"]) == ("succeeded", 1)
        due = parse_time(attempt["stop"]) + offset
        late = (parse_time(attempt["started_at"]) - due).total_seconds()
        assert 0 <= late < 1.5, f"{attempt['start']} ran {late:+.3f} s after it was due"

    events = json_lines(daemon)
    names = [e["event"] for e in events]
    for name in ("daemon_started", "signal_received", "daemon_stopping", "daemon_stopped"):
        assert name in names
    succeeded = [e for e in events if e["event"] == "window_succeeded"]
    for event in succeeded:
        assert event.keys() >= WINDOW_EVENT_KEYS, event
        assert (event["job"], event["attempt"]) == ("live", 1)
    logged = {
        (parse_time(e["window_start"]), parse_time(e["window_stop"]), e["run_id"])
        for e in succeeded
    }
    recorded = {(parse_time(a["start"]), parse_time(a["stop"]), a["run_id"]) for a in attempts}
    # Each window ran alone unless the daemon fell behind, in which case a logged batch covers
    # several recorded windows under one run id.
    for low, high, run_id in recorded:
        assert any(a <= low and high <= b and r == run_id for a, b, r in logged), (low, run_id)
    assert len({r for _, _, r in logged}) == len(logged)


def test_the_daemon_catches_up_with_coalesced_queries(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    start = floor_to(datetime.now(UTC), FIVE_MINUTES) - timedelta(hours=2)
    points = telemetry(21, start)  # 24 five-minute windows of data (and one either side)
    write_points(influxd, db, points)
    config = write_config(db, {"down": job(start, catchup_chunk="30m")})
    per_query = timedelta(minutes=30) // FIVE_MINUTES
    state = config.parent / "state.db"

    with processes() as spawned:
        daemon = spawn("run", "-c", config, log_level="info")
        spawned.append(daemon)
        daemon.wait_for("daemon_started", timeout=15)
        began = time.monotonic()
        while (read_state(state, "down")[0] or start) < start + timedelta(hours=2):
            assert time.monotonic() - began < 20, "the daemon did not catch up in 20 s"
            time.sleep(0.05)
        caught_up_in = time.monotonic() - began
        daemon.send(signal.SIGTERM)
        daemon.wait_expecting({0}, timeout=15)

    assert caught_up_in < 10
    watermark, _, _ = read_state(state, "down")
    assert watermark is not None
    count = (watermark - start) // FIVE_MINUTES
    spans = grid(start, FIVE_MINUTES, count)
    attempts = history(config, "down")
    assert [(parse_time(a["start"]), parse_time(a["stop"])) for a in attempts] == spans
    assert {(a["status"], a["attempt"]) for a in attempts} == {("succeeded", 1)}
    # Windows are coalesced into queries of up to 30 minutes, counted from the first window.
    run_ids = [a["run_id"] for a in attempts]
    assert len(set(run_ids)) == math.ceil(count / per_query)
    for i, run_id in enumerate(run_ids[:24]):
        assert (run_id == run_ids[0]) == (i < per_query)
        assert run_id == run_ids[i // per_query * per_query]
    assert len(set(run_ids[:24])) == 24 // per_query
    succeeded = [e for e in json_lines(daemon) if e["event"] == "window_succeeded"]
    assert len(succeeded) == len(set(run_ids))
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, spans))


def held_query_daemon(
    influxd: ThrowawayInfluxd,
    db: str,
    write_config: ConfigWriter,
    proxy: SlowProxy,
    spawned: list[Tierflow],
    scheduler: dict[str, object],
    *,
    hold: float = math.inf,
    chunk: str | None = None,
) -> tuple[Path, datetime, list[Point], Tierflow, dict[str, Any]]:
    """A daemon with two five-minute windows due (one query, or one each with `chunk="5m"`),
    whose queries the proxy holds for `hold` seconds, in `spawned` to be cleaned up; returns
    once the first query is sent."""
    start = floor_to(datetime.now(UTC), FIVE_MINUTES) - 2 * FIVE_MINUTES
    points = telemetry(22, start)
    write_points(influxd, db, points)
    config = add_tables(
        write_config(db, {"down": job(start, catchup_chunk=chunk)}, url=proxy.url),
        {"scheduler": scheduler},
    )
    proxy.request_delay = hold
    daemon = spawn("run", "-c", config, log_level="debug")
    spawned.append(daemon)
    begun = daemon.wait_for("window_started", timeout=15)
    return config, start, points, daemon, begun


def test_sigterm_lets_the_window_in_flight_finish_and_starts_no_other(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    with SlowProxy(upstream(influxd)) as proxy, processes() as spawned:
        config, start, points, daemon, begun = held_query_daemon(
            influxd, db, write_config, proxy, spawned, {"grace": "10s"}, hold=1.5, chunk="5m"
        )
        code, stopped_in = daemon.stop(signal.SIGTERM)

    assert code == 0, daemon.describe()
    assert 1.0 <= stopped_in < 5, f"exit {stopped_in:.2f} s after SIGTERM"
    first = (start, start + FIVE_MINUTES)
    assert (parse_time(begun["window_start"]), parse_time(begun["window_stop"])) == first
    events = json_lines(daemon)
    assert [e["run_id"] for e in events if e["event"] == "window_started"] == [begun["run_id"]]
    assert [e["run_id"] for e in events if e["event"] == "window_succeeded"] == [begun["run_id"]]
    watermark, ledger, _ = read_state(config.parent / "state.db", "down")
    assert watermark == start + FIVE_MINUTES
    assert [(row.start, row.stop, row.status) for row in ledger] == [(*first, "succeeded")]
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, [first]))


def test_sigterm_abandons_a_window_still_running_after_the_grace_period(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    with SlowProxy(upstream(influxd)) as proxy, processes() as spawned:
        config, start, points, daemon, begun = held_query_daemon(
            influxd, db, write_config, proxy, spawned, {"grace": "1s"}
        )
        code, stopped_in = daemon.stop(signal.SIGTERM)
        proxy.request_delay = 0

        assert code == 0, daemon.describe()
        assert 0.9 <= stopped_in < 4, f"exit {stopped_in:.2f} s after SIGTERM; grace is 1 s"
        state = config.parent / "state.db"
        watermark, ledger, attempts = read_state(state, "down")
        assert watermark == start
        assert len(ledger) == begun["windows"] >= 2
        assert {(row.status, row.run_id) for row in ledger} == {("abandoned", begun["run_id"])}
        assert {(a.status, a.error) for a in attempts} == {
            ("abandoned", "abandoned: tierflow shut down while the window ran")
        }
        assert read_tier(influxd, db, WARM_RP) == {}  # the held query never reached the server
        events = json_lines(daemon)
        (abandoned,) = [e for e in events if e["event"] == "window_abandoned"]
        assert abandoned.keys() >= WINDOW_EVENT_KEYS
        assert abandoned["run_id"] == begun["run_id"]
        (stopped,) = [e for e in events if e["event"] == "daemon_stopped"]
        assert stopped["abandoned_loops"] == 1

        # The abandoned windows are still due: the next run completes them, exactly.
        report = ok_json(run_tierflow("run-once", "-c", config, "--json"))
    assert report["failed"] == 0
    assert {(r["status"], r["attempts"]) for r in report["runs"]} == {("succeeded", 2)}
    watermark, ledger, _ = read_state(state, "down")
    assert watermark is not None
    spans = grid(start, FIVE_MINUTES, (watermark - start) // FIVE_MINUTES)
    assert len(spans) >= 2
    assert [(row.start, row.stop, row.status) for row in ledger] == [
        (low, high, "succeeded") for low, high in spans
    ]
    assert_tier(read_tier(influxd, db, WARM_RP), expected_tier(points, spans))


def test_a_second_signal_during_the_grace_period_exits_at_once(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter
) -> None:
    with SlowProxy(upstream(influxd)) as proxy, processes() as spawned:
        config, start, _, daemon, begun = held_query_daemon(
            influxd, db, write_config, proxy, spawned, {"grace": "30s"}
        )
        daemon.send(signal.SIGTERM)
        daemon.wait_for("daemon_stopping", timeout=5)
        code, stopped_in = daemon.stop(signal.SIGINT)

    assert stopped_in < 1.5
    assert code == 1, daemon.describe()  # os._exit(1): nothing is cleaned up
    assert "second_signal_exit" in [e["event"] for e in json_lines(daemon)]
    # Nobody recorded the window's end: it stays claimed until its lease expires.
    watermark, ledger, _ = read_state(config.parent / "state.db", "down")
    assert watermark == start
    assert {(row.status, row.run_id) for row in ledger} == {("running", begun["run_id"])}


def test_readyz_is_503_while_the_connection_is_unreachable(
    db: str, write_config: ConfigWriter
) -> None:
    port, closed = free_port(), free_port()
    later = datetime.now(UTC) + timedelta(days=1)  # no window comes due meanwhile
    config = add_tables(
        write_config(db, {"down": job(later)}, url=f"http://127.0.0.1:{closed}"),
        {"server": {"listen": f"127.0.0.1:{port}"}},
    )
    base = f"http://127.0.0.1:{port}"
    with processes() as spawned:
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        healthz = wait_http(f"{base}/healthz", timeout=15, process=daemon)
        readyz = http_get(f"{base}/readyz")
        daemon.send(signal.SIGTERM)
        daemon.wait_expecting({0}, timeout=15)

    assert healthz[0] == 200
    assert readyz[0] == 503
    body = json.loads(readyz[1])
    assert body["ready"] is False
    assert body["checks"]["state"] == "ok"
    assert f"127.0.0.1:{closed} unreachable" in body["checks"]["connection:plant"]
