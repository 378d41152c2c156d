"""A throwaway InfluxDB 1.x server for tests, the demo and benchmarks.

`ThrowawayInfluxd` runs the local `influxd` binary on free loopback ports with every file under one
directory, waits for it to answer, and stops it and deletes that directory afterwards. It also
carries a tiny synchronous HTTP client (`query`, `execute`, `write`, `series_points`) so tests can
set up and check data without going through tierflow's own engine.

Only the standard library is used, so the helper works wherever the tests do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["InfluxdError", "ThrowawayInfluxd"]

BINARY_ENV_VAR = "TIERFLOW_INFLUXD"
_START_ATTEMPTS = 3
_STOP_GRACE_SECONDS = 10.0
_POLL_INTERVAL_SECONDS = 0.02
_HTTP_TIMEOUT_SECONDS = 120.0
# The server refuses bodies above `[http] max-body-size` (25 MB by default) with 413.
_WRITE_CHUNK_BYTES = 5_000_000
_LOG_TAIL_BYTES = 4_000
_PRECISIONS = frozenset({"ns", "n", "u", "us", "ms", "s", "m", "h"})
_CONFIG_NAME = "influxd.toml"
_TSM_DIR_NAME = "data"
_WAL_DIR_NAME = "wal"
_LOG_NAME = "influxd.log"


class InfluxdError(RuntimeError):
    """The throwaway server failed to start, or answered a request with an error."""


class ThrowawayInfluxd:
    """Starts `influxd` on free loopback ports with its own temp dir; stops and deletes it.

    Use it as a context manager, or call `start()` and `stop()`. Each `start()` picks new ports.
    When `data_dir` is passed in, the server keeps its files there and `stop()` leaves them, so a
    second server can be started on the same data; otherwise a temporary directory is created on
    the first `start()` and deleted by `stop()`. `kill()` simulates a crash: the process dies
    with SIGKILL and every file stays, so `start()` again replays the WAL from the same directory.

    The binary is `binary`, else `$TIERFLOW_INFLUXD`, else `influxd` on the PATH. A wrapper
    script must `exec` influxd, since the signals of `stop()` and `kill()` go to its process.
    """

    process: subprocess.Popen[bytes] | None

    def __init__(
        self,
        *,
        binary: str | None = None,
        data_dir: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._binary_arg = binary
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._owns_data_dir = data_dir is None
        self._startup_timeout = startup_timeout
        self._http_port: int | None = None
        self._rpc_port: int | None = None
        self._binary: str | None = None
        self._log_offset = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.process = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:40123``; valid while running."""
        if self._http_port is None or self.process is None:
            raise InfluxdError("the throwaway influxd is not running; call start() first")
        return f"http://127.0.0.1:{self._http_port}"

    @property
    def data_dir(self) -> Path:
        """Directory holding `meta/`, `data/`, `wal/`, the config file and the server log."""
        if self._data_dir is None:
            raise InfluxdError("the throwaway influxd has no data directory yet; call start()")
        return self._data_dir

    @property
    def tsm_dir(self) -> Path:
        """The `[data] dir`: `<db>/<rp>/<shard id>/*.tsm` (and each shard's tombstones)."""
        return self.data_dir / _TSM_DIR_NAME

    @property
    def wal_dir(self) -> Path:
        """The `[data] wal-dir`: `<db>/<rp>/<shard id>/_NNNNN.wal`, writes not yet in a TSM file."""
        return self.data_dir / _WAL_DIR_NAME

    @property
    def binary(self) -> str:
        """Path of the `influxd` binary (or wrapper) the running server was started from."""
        if self._binary is None or self.process is None:
            raise InfluxdError("the throwaway influxd is not running; call start() first")
        return self._binary

    @property
    def rpc_address(self) -> str:
        """``127.0.0.1:PORT`` of the RPC service (`influxd backup -host`); valid while running."""
        if self._rpc_port is None or self.process is None:
            raise InfluxdError("the throwaway influxd is not running; call start() first")
        return f"127.0.0.1:{self._rpc_port}"

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr, appended to across restarts."""
        return self.data_dir / _LOG_NAME

    def start(self) -> Self:
        """Start the server and wait until `GET /ping` answers 204.

        Raises `InfluxdError` (a `RuntimeError`) with the tail of the server log when the binary
        is missing, the process exits, or it does not answer within `startup_timeout` seconds.
        A port taken between choosing it and binding it is retried with new ports.
        """
        if self.process is not None:
            raise InfluxdError("the throwaway influxd is already running")
        binary = _find_binary(self._binary_arg)
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="tierflow-influxd-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # A failed start stops the half-started server and deletes a temp dir (the error carries
        # the log's tail), since `with ThrowawayInfluxd()` never reaches __exit__ then.
        lost_race: _PortInUseError | None = None
        try:
            for _ in range(_START_ATTEMPTS):
                try:
                    self._launch(binary, *_free_ports(2))
                except _PortInUseError as exc:
                    lost_race = exc
                else:
                    return self
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise InfluxdError(f"{lost_race}\n(gave up after {_START_ATTEMPTS} tries with new ports)")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and delete a temp data dir.

        A `data_dir` given by the caller is left in place. Calling `stop()` twice is harmless.
        """
        if self.process is not None:
            _terminate(self.process, grace=_STOP_GRACE_SECONDS)
        self._forget_process()
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def kill(self) -> None:
        """Kill the server with SIGKILL and keep every file, as a crash would.

        `start()` then restarts on the same directory; `stop()` still deletes a temp dir.
        """
        if self.process is not None:
            _terminate(self.process, grace=0.0)
        self._forget_process()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, binary: str, http_port: int, rpc_port: int) -> None:
        config_path = self.data_dir / _CONFIG_NAME
        config_path.write_text(_render_config(self.data_dir, http_port, rpc_port), encoding="utf-8")
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            process = subprocess.Popen(
                [binary, "-config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.process = process
        self._http_port = http_port
        self._rpc_port = rpc_port
        self._binary = binary
        # Don't leave a server running, or a temp dir behind, when a test forgets stop() or the
        # interpreter exits first.
        owned = self._data_dir if self._owns_data_dir else None
        self._finalizer = weakref.finalize(self, _cleanup, process, owned)
        try:
            self._wait_until_ready(process, rpc_port)
        except BaseException:
            self.kill()
            raise

    def _wait_until_ready(self, process: subprocess.Popen[bytes], rpc_port: int) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if process.poll() is not None:
                tail = self._log_tail()
                message = f"influxd exited with status {process.returncode} during startup"
                # The bind error ends the log: "run: open server: open service: listen tcp
                # 127.0.0.1:PORT: bind: address already in use".
                if "address already in use" in tail:
                    raise _PortInUseError(_with_log(message, tail))
                raise InfluxdError(_with_log(message, tail))
            if _ping(self.url):
                # Whoever won a race for the port may be another influxd (parallel test runs).
                # Ours is the one bound to the RPC address picked with this HTTP port; unlike
                # its PID, that also holds when `binary` is a wrapper script.
                answering = self._rpc_bind_address()
                if answering == f"127.0.0.1:{rpc_port}":
                    return
                raise _PortInUseError(
                    f"{self.url} is answered by another server (its RPC bind-address is "
                    f"{answering}, ours is 127.0.0.1:{rpc_port})"
                )
            if time.monotonic() > deadline:
                message = f"influxd did not answer /ping within {self._startup_timeout:g} s"
                raise InfluxdError(_with_log(message, self._log_tail()))
            time.sleep(_POLL_INTERVAL_SECONDS)

    def _rpc_bind_address(self) -> str | None:
        try:
            (result,) = self.query("SHOW DIAGNOSTICS FOR 'config'")
            series = result["series"][0]
            return str(
                dict(zip(series["columns"], series["values"][0], strict=True))["bind-address"]
            )
        except (InfluxdError, LookupError, TypeError, ValueError):
            return None

    def _forget_process(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self.process = None
        self._http_port = None
        self._rpc_port = None
        self._binary = None

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, size - _LOG_TAIL_BYTES))
                return log.read().decode("utf-8", errors="replace").strip()
        except OSError:
            return ""

    # -- tiny HTTP client ----------------------------------------------------------------------

    def query(
        self, q: str, *, db: str | None = None, epoch: str | None = "ns"
    ) -> list[dict[str, Any]]:
        """POST `/query` and return its `results` list, one entry per statement.

        Raises `InfluxdError` on an HTTP error and on any statement-level `error` (the server
        reports those with HTTP 200). With `epoch=None` times come back as RFC 3339 strings.
        """
        params = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        body = urllib.parse.urlencode(params).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, payload = self._post("/query", body, headers)
        if status != 200:
            raise InfluxdError(f"query {q!r} failed with HTTP {status}: {_error_text(payload)}")
        document = json.loads(payload)
        if "error" in document:
            raise InfluxdError(f"query {q!r} failed: {document['error']}")
        results: list[dict[str, Any]] = document.get("results", [])
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise InfluxdError(f"query {q!r} failed: {'; '.join(errors)}")
        return results

    def execute(self, q: str, *, db: str | None = None) -> None:
        """Run statements for their effect (`CREATE DATABASE`, `DROP …`), checking for errors."""
        self.query(q, db=db)

    def write(
        self,
        lines: str | bytes | Iterable[str],
        *,
        db: str,
        rp: str | None = None,
        precision: str = "ns",
    ) -> None:
        """POST line protocol to `/write`, in bodies of about 5 MB, expecting 204 for each.

        `precision` is one of ``ns`` (or ``n``), ``u`` (or ``us``), ``ms``, ``s``, ``m``, ``h``.
        """
        for body in _chunks(_encoded_lines(lines), _WRITE_CHUNK_BYTES):
            self.write_body(body, db=db, rp=rp, precision=precision)

    def write_body(
        self, body: bytes, *, db: str, rp: str | None = None, precision: str = "ns"
    ) -> None:
        """POST `body` to `/write` as it is, in one request, expecting 204. Unlike `write`, which
        splits at every newline, this keeps a string field holding a newline or carriage return
        intact."""
        # influxd 1.6.7 reads an unknown precision as nanoseconds without a word: refuse it here.
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, not {precision!r}")
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        path = "/write?" + urllib.parse.urlencode(params)
        status, payload = self._post(path, body, {"Content-Type": "text/plain; charset=utf-8"})
        if status != 204:
            raise InfluxdError(f"write to {db!r} failed with HTTP {status}: {_error_text(payload)}")

    def series_points(self, q: str, *, db: str) -> list[dict[str, Any]]:
        """Run a SELECT and flatten it: one dict per row with `time` (int ns), tags and columns.

        Tags come from each series' `tags` (present when the query groups by them); a column
        with the same name as a tag wins. Rows of every statement and series are concatenated
        in the order the server returned them.
        """
        rows: list[dict[str, Any]] = []
        for result in self.query(q, db=db, epoch="ns"):
            for series in result.get("series", []):
                tags: dict[str, Any] = series.get("tags") or {}
                columns: list[str] = series["columns"]
                rows.extend(
                    {**tags, **dict(zip(columns, v, strict=True))} for v in series["values"]
                )
        return rows

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_SECONDS) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except OSError as exc:
            raise InfluxdError(f"POST {path.split('?')[0]} to {self.url} failed: {exc}") from exc


class _PortInUseError(InfluxdError):
    """influxd lost the race for a port we picked; try again with new ones."""


def _find_binary(binary: str | None) -> str:
    candidate = binary or os.environ.get(BINARY_ENV_VAR) or "influxd"
    found = shutil.which(candidate)
    if found is None:
        raise InfluxdError(
            f"influxd binary not found (looked for {candidate!r}; set the `binary` argument or "
            f"${BINARY_ENV_VAR} to choose another). Install InfluxDB 1.x with "
            "`apt-get install influxdb`."
        )
    return found


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are bound so the ports differ; the OS may hand a port out again
    # before influxd binds it, which `start()` survives by retrying.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _render_config(data_dir: Path, http_port: int, rpc_port: int) -> str:
    def path(name: str) -> str:
        return _toml_string(str(data_dir / name))

    # influxd 1.x ignores keys and sections it does not know. Debian's build names the phone-home
    # switch `reporting-enabled` (default false); upstream's is `reporting-disabled`: set both.
    # `level = "warning"` is refused ("unrecognized level"); "warn" is the spelling it takes.
    return f"""\
reporting-enabled = false
reporting-disabled = true
bind-address = {_toml_string(f"127.0.0.1:{rpc_port}")}

[meta]
  dir = {path("meta")}

[data]
  dir = {path(_TSM_DIR_NAME)}
  wal-dir = {path(_WAL_DIR_NAME)}
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  bind-address = {_toml_string(f"127.0.0.1:{http_port}")}
  log-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything a path or address can contain.
    return json.dumps(value)


def _ping(url: str) -> bool:
    try:
        # Short: a squatter on the port may accept and never answer, and influxd answers in ms.
        with urllib.request.urlopen(url + "/ping", timeout=0.5) as response:
            return int(response.status) == 204
    except OSError:  # refused while starting up; HTTPError and timeouts are OSErrors too
        return False


def _terminate(process: subprocess.Popen[bytes], *, grace: float) -> None:
    if process.poll() is None and grace > 0:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    if process.poll() is None:
        process.kill()
    process.wait()


def _cleanup(process: subprocess.Popen[bytes], owned_dir: Path | None) -> None:
    _terminate(process, grace=_STOP_GRACE_SECONDS)
    if owned_dir is not None:
        shutil.rmtree(owned_dir, ignore_errors=True)


def _encoded_lines(lines: str | bytes | Iterable[str]) -> Iterator[bytes]:
    # Split on "\n" only: str.splitlines() would also split inside string fields at U+2028 etc.
    if isinstance(lines, bytes):
        yield from lines.split(b"\n")
    elif isinstance(lines, str):
        yield from lines.encode().split(b"\n")
    else:
        yield from (line.encode() for line in lines)


def _chunks(lines: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """Join lines with newlines into bodies of at most about `limit` bytes, skipping blanks."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        stripped = line.strip(b"\r\n")
        if not stripped:
            continue
        if batch and size + len(stripped) + 1 > limit:
            yield b"\n".join(batch)
            batch, size = [], 0
        batch.append(stripped)
        size += len(stripped) + 1
    if batch:
        yield b"\n".join(batch)


def _error_text(payload: bytes) -> str:
    try:
        document = json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", errors="replace").strip() or "(empty body)"
    if isinstance(document, dict) and "error" in document:
        return str(document["error"])
    return json.dumps(document)


def _with_log(message: str, tail: str) -> str:
    return f"{message}; its log ends with:\n{tail or '(empty)'}"
