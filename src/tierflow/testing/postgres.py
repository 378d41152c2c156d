"""A PostgreSQL server for tests, the demo and benchmarks: a throwaway one, or one you name.

`ThrowawayPostgres` uses the server at `$TIERFLOW_TEST_POSTGRES_URL` when that is set (it never
touches that server's existing databases: each `new_database()` creates a uniquely named one and
`stop()` drops them). Otherwise it runs Debian's `postgresql` binaries (`initdb`, `pg_ctl`, from
`/usr/lib/postgresql/<version>/bin` or `$TIERFLOW_POSTGRES_BIN`) on a free loopback port with
every file, the unix socket too, under one temporary directory, deleted by `stop()`. initdb
refuses to run as root: as root the binaries run as the `postgres` user (`runuser`), which owns
that directory.

Creating and dropping databases needs psycopg (`pip install 'tierflow[postgres]'`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

__all__ = ["POSTGRES_URL_ENV_VAR", "PostgresError", "ThrowawayPostgres"]

POSTGRES_URL_ENV_VAR = "TIERFLOW_TEST_POSTGRES_URL"
BIN_ENV_VAR = "TIERFLOW_POSTGRES_BIN"
_SUPERUSER = "postgres"
_RUN_AS = "postgres"  # the system user Debian's package creates
_LOG_TAIL_BYTES = 4_000
_START_ATTEMPTS = 3
# Durability is not what a throwaway server is for: no fsync makes initdb and tests fast.
_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
    "listen_addresses=127.0.0.1",
)


class PostgresError(RuntimeError):
    """The throwaway server failed to start or stop, or a database could not be made."""


class ThrowawayPostgres:
    """A PostgreSQL server for tests: `$TIERFLOW_TEST_POSTGRES_URL`'s, else a throwaway one.

    Use it as a context manager, or call `start()` and `stop()`. `new_database()` gives the URL
    of a fresh, empty database; every database it made is dropped by `drop_database()` or
    `stop()`. `url` is the server's maintenance database (`postgres`), as superuser.
    """

    def __init__(
        self, *, url: str | None = None, bin_dir: Path | None = None, startup_timeout: int = 60
    ) -> None:
        given = url if url is not None else os.environ.get(POSTGRES_URL_ENV_VAR) or None
        self._given = given
        self._bin_arg = bin_dir
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._port: int | None = None
        self._made: list[str] = []
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def external(self) -> bool:
        """Whether the server is one named by URL (not started here)."""
        return self._given is not None

    @property
    def url(self) -> str:
        """The maintenance database's URL, e.g. ``postgresql://postgres@127.0.0.1:40123/postgres``."""
        if self._given is not None:
            return self._given
        if self._port is None:
            raise PostgresError("the throwaway PostgreSQL is not running; call start() first")
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self._port}/postgres"

    @property
    def data_dir(self) -> Path:
        """The throwaway server's directory: `data/` (the cluster), `server.log`, the socket."""
        if self._dir is None:
            raise PostgresError("no throwaway PostgreSQL directory; call start() first")
        return self._dir

    def start(self) -> Self:
        """Start the throwaway server (initdb, then `pg_ctl start`, waiting until it answers);
        with a URL given, only check that it answers."""
        if self._given is not None:
            self._check_connects()
            return self
        if self._port is not None:
            raise PostgresError("the throwaway PostgreSQL is already running")
        bin_dir = _find_bin_dir(self._bin_arg)
        self._dir = Path(tempfile.mkdtemp(prefix="tierflow-postgres-"))
        as_root = os.geteuid() == 0
        if as_root:
            shutil.chown(self._dir, _RUN_AS, _RUN_AS)
        try:
            self._initdb(bin_dir, as_root)
            self._finalizer = weakref.finalize(self, _cleanup, bin_dir, self._dir, as_root)
            self._launch(bin_dir, as_root)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Drop the databases made here; stop a throwaway server and delete its directory.
        Calling `stop()` twice is harmless."""
        for name in list(self._made):
            with contextlib.suppress(Exception):
                self.drop_database(name)
        if self._finalizer is not None:
            self._finalizer()  # pg_ctl stop -m immediate, then delete the directory
            self._finalizer = None
        elif self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self._port = None

    def halt(self, mode: str = "fast") -> None:
        """Stop the throwaway server but keep its data and port, as an outage would (`resume()`
        ends it). `mode` is pg_ctl's: `fast` ends the clients' sessions as a shutdown does,
        `immediate` as a crash does."""
        bin_dir, as_root = self._throwaway("halt")
        self._pg_ctl(bin_dir, as_root, "stop", "-m", mode, "-w")

    def resume(self) -> None:
        """Start the server `halt()` stopped, on the same port, waiting until it answers."""
        bin_dir, as_root = self._throwaway("resume")
        assert self._port is not None
        options = _server_options(self._port, self.data_dir)
        timeout = str(self._startup_timeout)
        self._pg_ctl(bin_dir, as_root, "start", "-w", "-t", timeout, "-o", options)

    def _throwaway(self, what: str) -> tuple[Path, bool]:
        if self._given is not None or self._port is None:
            raise PostgresError(f"{what}() needs a running throwaway server, not a given URL")
        return _find_bin_dir(self._bin_arg), os.geteuid() == 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------

    def new_database(self, prefix: str = "tierflow_test") -> str:
        """Create an empty database with a unique name; return its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}"')
        self._made.append(name)
        return self.database_url(name)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database `new_database` made (closing its connections first)."""
        name = urlsplit(name_or_url).path.lstrip("/") if "://" in name_or_url else name_or_url
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._made:
            self._made.remove(name)

    def database_url(self, name: str) -> str:
        """The server's URL with its database replaced by `name`."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def execute(self, sql: str, url: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit (on the maintenance database unless `url` says);
        return its rows (none for a statement without a result)."""
        import psycopg

        try:
            with psycopg.connect(url or self.url, autocommit=True, connect_timeout=10) as db:
                cursor = db.execute(sql.encode())
                return cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            raise PostgresError(f"{sql!r} failed: {exc}") from exc

    # -- the throwaway server --------------------------------------------------------------------

    def _initdb(self, bin_dir: Path, as_root: bool) -> None:
        data = self.data_dir / "data"
        _run(
            _as_postgres(
                as_root,
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    _SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
            ),
            "initdb",
        )

    def _pg_ctl(self, bin_dir: Path, as_root: bool, *args: str) -> None:
        data, log = self.data_dir / "data", self.data_dir / "server.log"
        command = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), *args]
        try:
            _run(_as_postgres(as_root, command), "pg_ctl " + args[0])
        except PostgresError as exc:
            raise PostgresError(f"{exc}\n--- server log ---\n{_tail(log)}") from None

    def _launch(self, bin_dir: Path, as_root: bool) -> None:
        """`pg_ctl start` on a free port, with new ports while another process wins the race."""
        for attempt in range(_START_ATTEMPTS):
            port = _free_port()
            try:
                self._pg_ctl(
                    bin_dir,
                    as_root,
                    "start",
                    "-w",
                    "-t",
                    str(self._startup_timeout),
                    "-o",
                    _server_options(port, self.data_dir),
                )
            except PostgresError as exc:
                if "already in use" not in str(exc) or attempt == _START_ATTEMPTS - 1:
                    raise
            else:
                self._port = port
                return

    def _check_connects(self) -> None:
        self.execute("SELECT 1")


def _server_options(port: int, where: Path) -> str:
    settings = " ".join(f"-c {setting}" for setting in _SETTINGS)
    return f"-p {port} -k {where} {settings}"


def _find_bin_dir(given: Path | None) -> Path:
    if given is not None:
        return Path(given)
    if env := os.environ.get(BIN_ENV_VAR):
        return Path(env)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if not found:
        raise PostgresError(
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb): install Debian's "
            f"postgresql package (scripts/bootstrap does), set {BIN_ENV_VAR}, or point "
            f"{POSTGRES_URL_ENV_VAR} at a server"
        )
    return found[-1].parent


def _as_postgres(as_root: bool, command: Sequence[str]) -> list[str]:
    return ["runuser", "-u", _RUN_AS, "--", *command] if as_root else list(command)


def _run(command: Sequence[str], what: str) -> None:
    done = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, cwd="/"
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-_LOG_TAIL_BYTES:]
        raise PostgresError(f"{what} exited with status {done.returncode}: {output}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-_LOG_TAIL_BYTES:]
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cleanup(bin_dir: Path, where: Path, as_root: bool) -> None:
    """Stop the server at once (no checkpoint: it is thrown away) and delete its directory."""
    command = [str(bin_dir / "pg_ctl"), "-D", str(where / "data"), "stop", "-m", "immediate", "-w"]
    with contextlib.suppress(Exception):
        subprocess.run(
            _as_postgres(as_root, command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            cwd="/",
            timeout=60,
        )
    shutil.rmtree(where, ignore_errors=True)
