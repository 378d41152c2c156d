"""Helpers for the tests that run the real `tierflow` process: spawning it with its JSON log read
as it comes, a TCP proxy that makes the server slow on demand, plain HTTP and Prometheus text
readers, and a direct look at the SQLite state file.

None of them goes through tierflow's own code: the process is the console script, the state file
is read with `sqlite3`, the metrics with `prometheus_client`'s parser.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import toml_value

TIERFLOW = Path(sys.executable).parent / "tierflow"
Event = dict[str, Any]


# -- configs ---------------------------------------------------------------------------------


def add_tables(config: Path, tables: Mapping[str, Mapping[str, object]]) -> Path:
    """Append top-level tables (`scheduler`, `server`) to a config `write_config` wrote."""
    lines = []
    for name, body in tables.items():
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in body.items()]
    with config.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return config


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def floor_to(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (moment - epoch) // step * step


def ceil_to(moment: datetime, step: timedelta) -> datetime:
    floor = floor_to(moment, step)
    return floor if floor == moment else floor + step


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# -- the tierflow process --------------------------------------------------------------------


@dataclass
class Tierflow:
    """A running `tierflow` console script whose stderr (JSON lines, since it is a pipe) a
    thread collects as it comes, so that a test can wait for a log event."""

    process: subprocess.Popen[str]
    stderr: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for text in self.process.stderr:
            with self._changed:
                self.stderr.append(text.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def events(self) -> list[Event]:
        """The stderr lines that are JSON objects, in order."""
        with self._changed:
            lines = list(self.stderr)
        found = []
        for text in lines:
            with contextlib.suppress(ValueError):
                body = json.loads(text)
                if isinstance(body, dict):
                    found.append(body)
        return found

    def wait_for(self, event: str, timeout: float) -> Event:
        """The first `event` logged; fail after `timeout` seconds or once the process has ended
        without logging it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for text in self.stderr[seen:]:
                    with contextlib.suppress(ValueError):
                        body = json.loads(text)
                        if isinstance(body, dict) and body.get("event") == event:
                            return body
                seen = len(self.stderr)
                reading = self._reader is not None and self._reader.is_alive()
                if time.monotonic() > deadline or not reading:
                    raise AssertionError(
                        f"no {event!r} event within {timeout:g} s; {self.describe()}"
                    )
                self._changed.wait(0.05)

    def describe(self) -> str:
        """The exit status (None while running) and the whole stderr so far, for an assertion
        message: a traceback or an error must be seen in full, not cut to a tail."""
        with self._changed:
            text = "\n".join(self.stderr)
        return f"exit status {self.process.poll()}; stderr:\n{text}"

    def wait_expecting(self, codes: set[int], timeout: float) -> int:
        """Wait for the process to end; fail showing its whole stderr unless its exit status is
        one of `codes`."""
        code = self.wait(timeout)
        assert code in codes, f"expected an exit status in {sorted(codes)}; {self.describe()}"
        return code

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far (Linux /proc)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, …
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def send(self, signum: int) -> float:
        """Send a signal; return the monotonic instant it went."""
        at = time.monotonic()
        self.process.send_signal(signum)
        return at

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def stop(self, signum: int, timeout: float = 15) -> tuple[int, float]:
        """Send a signal and wait for the exit: the exit code, and the seconds from the signal
        to the exit."""
        sent = self.send(signum)
        code = self.wait(timeout=timeout)
        return code, time.monotonic() - sent

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait(timeout=10)


def spawn(*args: str | Path, log_level: str = "info") -> Tierflow:
    """Start `tierflow --log-level LEVEL ARGS…` (global options go before the command)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    process = subprocess.Popen(
        [str(TIERFLOW), "--log-level", log_level, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return Tierflow(process)


def run_tierflow(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    return subprocess.run(
        [str(TIERFLOW), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    return json.loads(result.stdout)


@contextlib.contextmanager
def processes() -> Iterator[list[Tierflow]]:
    """Collects spawned processes and kills any still running when the block ends."""
    spawned: list[Tierflow] = []
    try:
        yield spawned
    finally:
        for process in spawned:
            process.kill()


# -- HTTP and Prometheus ---------------------------------------------------------------------


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def wait_http(url: str, timeout: float, process: Tierflow | None = None) -> tuple[int, str]:
    """GET `url` until something answers (the server may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(url)
        except (urllib.error.URLError, ConnectionError) as exc:
            ended = process is not None and process.process.poll() is not None
            if ended or time.monotonic() > deadline:
                tail = process.describe() if process is not None else ""
                raise AssertionError(
                    f"{url} did not answer within {timeout:g} s: {exc}\n{tail}"
                ) from exc
            time.sleep(0.05)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> tuple[dict[str, str], Samples]:
    """Prometheus text → ({family name: type}, {(sample name, labels): value})."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"sample {key} appears twice"
            samples[key] = sample.value
    return types, samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(n for n, _ in samples)}"
    return samples[key]


# -- a slow network ----------------------------------------------------------------------------


class SlowProxy:
    """A TCP proxy to `upstream` (host, port) on a free loopback port.

    Bytes from the client wait `request_delay` seconds before they go to the server; a client
    that hangs up meanwhile takes its unsent bytes with it (the server never sees the request).
    Bytes from the server wait `response_delay` seconds before they go back. Both delays may be
    changed while the proxy runs; `math.inf` holds requests for good.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        request_delay: float = 0.0,
        response_delay: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.request_delay = request_delay
        self.response_delay = response_delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> SlowProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            args = (client, server, lambda: self.request_delay, True)
            threading.Thread(target=self._pump, args=args, daemon=True).start()
            args = (server, client, lambda: self.response_delay, False)
            threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, delay: Callable[[], float], ask: bool
    ) -> None:
        try:
            ended = False
            while not ended and (data := source.recv(65536)):
                began = time.monotonic()
                # The delay is read again while waiting, so lifting it frees what is held.
                while time.monotonic() - began < delay():
                    ready, _, _ = select.select([] if ended else [source], [], [], 0.02)
                    if not ready:
                        continue
                    more = source.recv(65536)
                    if more:
                        data += more
                    elif ask:
                        return  # the client gave up: its request never reaches the server
                    else:
                        ended = True  # the server is done; its last bytes still wait
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# -- the SQLite state file -------------------------------------------------------------------

_MICRO = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + micros * _MICRO


@dataclass(frozen=True)
class LedgerRow:
    start: datetime
    stop: datetime
    status: str
    attempts: int
    run_id: str | None
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class AttemptRow:
    start: datetime
    stop: datetime
    attempt: int
    run_id: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    reason: str


@contextlib.contextmanager
def state_db(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, timeout=30)
    try:
        yield db
    finally:
        db.close()


def read_state(path: Path, job: str) -> tuple[datetime | None, list[LedgerRow], list[AttemptRow]]:
    """(watermark, ledger rows by window start, attempts in the order they were made), a row per
    window: the windows of a ledger range (done windows folded together, their run ids not
    kept) and of a history row (a run of windows claimed together) each read as their own."""
    with state_db(path) as db:
        db.execute("BEGIN")  # one snapshot for all reads, even while tierflow writes
        marks = db.execute("SELECT watermark FROM jobs WHERE job = ?", (job,)).fetchall()
        rows = db.execute(
            "SELECT window_start, window_stop, status, attempts, run_id, lease_expires_at"
            " FROM runs WHERE job = ?",
            (job,),
        ).fetchall()
        ranges = db.execute(
            "SELECT window_start, window_stop, window_length, status, attempts"
            " FROM ledger_ranges WHERE job = ?",
            (job,),
        ).fetchall()
        history = db.execute(
            "SELECT window_start, window_stop, windows, attempt, run_id, status, started_at,"
            " finished_at, error, reason FROM attempts WHERE job = ? ORDER BY id",
            (job,),
        ).fetchall()
    ledger = [
        LedgerRow(
            EPOCH + start * _MICRO, EPOCH + stop * _MICRO, status, attempts, run_id, moment(lease)
        )
        for start, stop, status, attempts, run_id, lease in rows
    ]
    ledger += [
        LedgerRow(
            EPOCH + first * _MICRO, EPOCH + (first + length) * _MICRO, status, attempts, None, None
        )
        for start, stop, length, status, attempts in ranges
        for first in range(start, stop, length)
    ]
    attempts = [
        AttemptRow(
            EPOCH + first * _MICRO,
            EPOCH + (first + (stop - start) // windows) * _MICRO,
            attempt,
            run_id,
            status,
            EPOCH + started * _MICRO,
            moment(finished),
            error,
            reason,
        )
        for start, stop, windows, attempt, run_id, status, started, finished, error, reason in (
            history
        )
        for first in range(start, stop, (stop - start) // windows)
    ]
    watermark = moment(marks[0][0]) if marks else None
    return watermark, sorted(ledger, key=lambda row: row.start), attempts


def sleep_past_leases(path: Path, job: str, margin: float = 0.2) -> None:
    """Sleep until every lease in the ledger has expired (by the wall clock, as tierflow's)."""
    _, ledger, _ = read_state(path, job)
    leases = [row.lease_expires_at for row in ledger if row.lease_expires_at is not None]
    if leases:
        time.sleep(max(0.0, (max(leases) - datetime.now(UTC)).total_seconds() + margin))


def integrity(path: Path) -> list[str]:
    with state_db(path) as db:
        return [row[0] for row in db.execute("PRAGMA integrity_check")]
