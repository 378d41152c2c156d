"""The daemon's reload, in process: a connection changed gets a new engine and the old one is
closed once no window uses it; what cannot change while running is refused and the running
config kept; asks for a reload that arrive during one make one more, not one each."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from tests.events import Events
from tests.fakes import FakeEngine
from tests.unit.test_daemon_loop import until
from tests.unit.test_runner import NOW, START
from tierflow import _daemon as daemon_module
from tierflow._config import CircuitConfig, Config, RetryConfig, load_config
from tierflow._daemon import Daemon, Reload
from tierflow._engines import Execution
from tierflow._errors import TransientEngineError
from tierflow._metrics import Metrics
from tierflow._resilience import ResilientEngine
from tierflow._runner import Runner
from tierflow._state import MemoryStateStore
from tierflow._status_page import circuits
from tierflow._templates import RenderedQuery

TOML = """
[state]
url = "{state}"

[connections.plant]
kind = "influxdb1"
url = "{url}"
timeout = "{timeout}"

[tiers.raw]
connection = "plant"
bucket = "raw/autogen"

[tiers.rollup]
connection = "plant"
bucket = "rollup"

[jobs.cpu]
kind = "downsample"
source = "raw"
dest = "rollup"
measurements = ["cpu"]
every = "1h"
start = "{start}"
aggregates = {{ usage = ["mean"] }}
"""


def write(
    path: Path,
    *,
    url: str = "http://a.example:8086",
    timeout: str = "15s",
    state: str = "memory://",
) -> Config:
    start = START.isoformat().replace("+00:00", "Z")
    text = TOML.format(url=url, timeout=timeout, state=state, start=start)
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def daemon_on(config: Config, fake: FakeEngine) -> Daemon:
    runner = Runner(config, MemoryStateStore(), engines={"plant": fake}, clock=lambda: NOW)
    return Daemon(runner, clock=lambda: NOW)


async def test_a_changed_connection_gets_a_new_engine_and_the_old_one_is_closed(
    tmp_path: Path, events: Events
) -> None:
    path = tmp_path / "tierflow.toml"
    fake = FakeEngine(points=3)
    daemon = daemon_on(write(path), fake)
    first = daemon.runner
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(fake.calls) == 5)  # the five due hours
    write(path, timeout="20s")  # not the URL: that is part of the job's definition
    found = await daemon.reload()
    assert found == Reload(changed=("cpu",), connections=("plant",))
    assert daemon.runner is not first
    assert first.retired
    assert daemon.runner.config.connections["plant"].timeout.total_seconds() == 20
    await until(lambda: fake.closed)  # the loop was asleep: nothing in flight used it
    assert "plant" not in daemon.runner.engines  # made anew on first use
    daemon.stopping.set()
    await task
    (logged,) = events.named("config_reloaded")
    assert logged["connections_changed"] == ["plant"]
    assert logged["jobs_changed"] == ["cpu"]
    metrics = first.metrics
    assert metrics.config_reloads.labels("success")._value.get() == 1


async def test_a_reload_moving_a_job_with_output_to_another_server_is_refused(
    tmp_path: Path, events: Events
) -> None:
    path = tmp_path / "tierflow.toml"
    fake = FakeEngine(points=3)
    daemon = daemon_on(write(path), fake)
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(fake.calls) == 5)
    write(path, url="http://b.example:8086")
    assert await daemon.reload() is None
    daemon.stopping.set()
    await task
    (failed,) = events.named("config_reload_failed")
    text = "\n".join(failed["problems"])
    assert "job cpu was redefined" in text
    assert "b.example" in text
    assert not fake.closed  # the running config's engine is the caller's, open


async def test_a_job_removed_ends_its_loop_and_its_series(tmp_path: Path, events: Events) -> None:
    path = tmp_path / "tierflow.toml"
    fake = FakeEngine(points=3)
    daemon = daemon_on(write(path), fake)
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(fake.calls) == 5)
    assert 'job="cpu"' in daemon.runner.metrics.render().decode()
    path.write_text(path.read_text().replace("[jobs.cpu]", "[jobs.mem]"), encoding="utf-8")
    assert await daemon.reload() == Reload(added=("mem",), removed=("cpu",))
    await until(lambda: bool(events.named("job_removed")))
    await until(lambda: len(fake.calls) == 10)  # mem's five hours, on the same engine
    assert daemon.watch is not None
    assert daemon.watch.worker.jobs == ("mem",)
    daemon.stopping.set()
    await task
    shown = daemon.runner.metrics.render().decode()
    assert 'job="cpu"' not in shown
    assert 'tierflow_window_runs_total{job="mem",status="succeeded"} 5.0' in shown
    assert not fake.closed  # the connection did not change: the engine was kept


async def test_a_reload_changing_state_is_refused_and_the_running_config_kept(
    tmp_path: Path, events: Events
) -> None:
    path = tmp_path / "tierflow.toml"
    daemon = daemon_on(write(path), FakeEngine())
    running = daemon.runner
    write(path, state=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert await daemon.reload() is None
    assert daemon.runner is running
    assert not running.retired
    (failed,) = events.named("config_reload_failed")
    assert "[state] changed" in failed["problems"][0]
    assert "restart it to apply them" in failed["problems"][0]
    assert running.metrics.config_last_reload_successful._value.get() == 0


async def test_a_config_given_as_a_mapping_cannot_be_reloaded(events: Events) -> None:
    config = Config.from_mapping(
        {
            "connections": {"plant": {"kind": "influxdb1", "url": "http://a.example:8086"}},
            "tiers": {"raw": {"connection": "plant", "bucket": "raw"}},
            "jobs": {},
        }
    )
    daemon = daemon_on(config, FakeEngine())
    assert await daemon.reload() is None
    (failed,) = events.named("config_reload_failed")
    assert "not read from a file" in failed["problems"][0]


async def test_asks_during_a_reload_make_one_more_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tierflow.toml"
    daemon = daemon_on(write(path), FakeEngine())
    release, reads = asyncio.Event(), []

    async def slow(running: Runner) -> Config:
        reads.append(running)
        await release.wait()
        return running.config

    monkeypatch.setattr("tierflow._daemon._reloadable", slow)
    task = asyncio.create_task(daemon.run())
    daemon.request_reload()
    await until(lambda: len(reads) == 1)
    for _ in range(5):
        daemon.request_reload()
    release.set()
    await until(lambda: len(reads) == 2)
    await asyncio.sleep(0.05)
    assert len(reads) == 2
    daemon.stopping.set()
    await task


async def test_a_bug_in_a_reload_is_logged_and_the_next_sighup_still_reloads(
    tmp_path: Path, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tierflow.toml"
    daemon = daemon_on(write(path), FakeEngine())
    running = daemon.runner
    real = daemon_module._compare
    monkeypatch.setattr(daemon_module, "_compare", lambda old, new: 1 / 0)
    task = asyncio.create_task(daemon.run())
    daemon.request_reload()
    await until(lambda: bool(events.named("config_reload_failed")))
    (failed,) = events.named("config_reload_failed")
    assert failed["problems"] == ["internal error: ZeroDivisionError: division by zero"]
    assert daemon.runner is running
    monkeypatch.setattr(daemon_module, "_compare", real)
    write(path, timeout="20s")
    daemon.request_reload()
    await until(lambda: bool(events.named("config_reloaded")))
    assert daemon.runner is not running
    daemon.stopping.set()
    await task


class HeldEngine(FakeEngine):
    """Holds every `execute` until `go` is set, counting how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__(points=1)
        self.go = asyncio.Event()
        self.inflight = 0
        self.most = 0

    async def execute(self, query: RenderedQuery, *, database: str | None = None) -> Execution:
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await self.go.wait()
            return await super().execute(query, database=database)
        finally:
            self.inflight -= 1


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("max_concurrency = 2\n", "max_concurrency = 1\n"),  # the connection's
        ("[scheduler]\nmax_concurrency = 2\n", "[scheduler]\nmax_concurrency = 1\n"),
    ],
    ids=["connection", "scheduler"],
)
async def test_a_limit_lowered_by_a_reload_counts_the_windows_still_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str, after: str
) -> None:
    # Two jobs, each with a window in flight on the one connection (limit 2). The reload lowers
    # the limit to 1 and adds a third job: its first window must wait until the two started
    # under the old config are done (and then run alone), never make three at once.
    path = tmp_path / "tierflow.toml"
    write(path)
    second = TOML.split("[jobs.cpu]")[1].replace('["cpu"]', '["mem"]')
    third = TOML.split("[jobs.cpu]")[1].replace('["cpu"]', '["disk"]')
    text = path.read_text(encoding="utf-8")
    if before.startswith("[scheduler]"):
        text = before + text
    else:
        text = text.replace('timeout = "15s"\n', 'timeout = "15s"\n' + before)
    text += "\n[jobs.mem]" + second.format(start=START.isoformat().replace("+00:00", "Z"))
    path.write_text(text, encoding="utf-8")
    engine = HeldEngine()
    # The connection's new engine (its settings changed) talks to the same server: one
    # engine stands for that server, counting what reaches it.
    monkeypatch.setattr("tierflow._runner._loop.engine_for", lambda *_: engine)
    daemon = daemon_on(load_config(path), engine)
    task = asyncio.create_task(daemon.run())
    await until(lambda: engine.inflight == 2)
    text = text.replace(before, after)
    text += "\n[jobs.disk]" + third.format(start=START.isoformat().replace("+00:00", "Z"))
    path.write_text(text, encoding="utf-8")
    assert await daemon.reload() == Reload(
        added=("disk",),
        changed=() if before.startswith("[") else ("cpu", "mem"),
        connections=() if before.startswith("[") else ("plant",),
        scheduler=before.startswith("["),
    )
    for _ in range(100):  # a while for the new job's loop to plan and ask for a slot
        await asyncio.sleep(0.005)
    assert engine.inflight == 2
    engine.go.set()
    await until(lambda: len(engine.calls) == 15)  # every due hour of the three jobs
    daemon.stopping.set()
    await task
    assert engine.most == 2


SIDE = """
[connections.side]
kind = "influxdb1"
url = "http://c.example:8086"

[tiers.side_raw]
connection = "side"
bucket = "side/autogen"

[tiers.side_rollup]
connection = "side"
bucket = "side_rollup"

[jobs.side]
kind = "downsample"
source = "side_raw"
dest = "side_rollup"
measurements = ["cpu"]
every = "1h"
start = "{start}"
aggregates = {{ usage = ["mean"] }}
"""


async def test_a_connection_removed_with_its_circuit_open_leaves_no_series(
    tmp_path: Path, events: Events
) -> None:
    # An open circuit's gauge frozen at 1 for a connection the config no longer has would fire
    # the circuit-open alert (contrib/prometheus) for as long as the daemon runs.
    path = tmp_path / "tierflow.toml"
    write(path)
    base = path.read_text(encoding="utf-8")
    path.write_text(
        base + SIDE.format(start=START.isoformat().replace("+00:00", "Z")), encoding="utf-8"
    )
    config = load_config(path)
    metrics = Metrics()
    down = FakeEngine()
    for call in range(100):
        down.fail_on(call, TransientEngineError("connection side: HTTP 503"))
    side = ResilientEngine(
        down,
        "side",
        RetryConfig(attempts=1),
        CircuitConfig(failures=1, cooldown=timedelta(hours=1)),
        metrics=metrics,
    )
    runner = Runner(
        config,
        MemoryStateStore(),
        engines={"plant": FakeEngine(points=3), "side": side},
        clock=lambda: NOW,
        metrics=metrics,
    )
    daemon = Daemon(runner, clock=lambda: NOW)
    task = asyncio.create_task(daemon.run())
    await until(lambda: 'tierflow_circuit_state{connection="side"} 1.0' in render(metrics))
    path.write_text(base, encoding="utf-8")
    assert await daemon.reload() == Reload(removed=("side",), connections=("side",))
    await until(lambda: bool(events.named("job_removed")))
    await until(lambda: down.closed)
    await until(lambda: 'connection="side"' not in render(metrics))
    daemon.stopping.set()
    await task
    assert 'tierflow_query_retries_total{connection="plant"} 0.0' in render(metrics)  # kept


def render(metrics: Metrics) -> str:
    return metrics.render().decode()


async def test_a_connection_changed_with_its_circuit_open_shows_its_new_circuit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reload that changes a connection (to repair it, often) gives it a new engine, made on
    # first use: until then its circuit is the new one's, closed (as /api/status says), not the
    # old engine's open one frozen in the gauge, which would page until the next window.
    path = tmp_path / "tierflow.toml"
    write(path)
    base = path.read_text(encoding="utf-8") + SIDE.format(
        start=START.isoformat().replace("+00:00", "Z")
    )
    path.write_text(base, encoding="utf-8")
    metrics = Metrics()
    down = FakeEngine()
    for call in range(100):
        down.fail_on(call, TransientEngineError("connection side: HTTP 503"))
    side = ResilientEngine(
        down,
        "side",
        RetryConfig(attempts=1),
        CircuitConfig(failures=1, cooldown=timedelta(hours=1)),
        metrics=metrics,
    )
    runner = Runner(
        load_config(path),
        MemoryStateStore(),
        engines={"plant": FakeEngine(points=3), "side": side},
        clock=lambda: NOW,
        metrics=metrics,
    )
    daemon = Daemon(runner, clock=lambda: NOW)
    task = asyncio.create_task(daemon.run())
    await until(lambda: 'tierflow_circuit_state{connection="side"} 1.0' in render(metrics))
    changed = base.replace(
        'url = "http://c.example:8086"', 'url = "http://c.example:8086"\ntimeout = "20s"'
    )
    path.write_text(changed, encoding="utf-8")
    found = await daemon.reload()
    assert found is not None
    assert found.connections == ("side",)
    await until(lambda: down.closed)
    assert circuits(daemon.runner)["side"] == "closed"  # what /api/status shows
    await until(lambda: 'tierflow_circuit_state{connection="side"} 0.0' in render(metrics))
    daemon.stopping.set()
    await task
