"""The public surface: one exception tree, a tested `__all__`, lazy imports, the Python API."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import tierflow
from tierflow import (
    ConfigError,
    EngineError,
    InvalidInputError,
    StateError,
    TierflowError,
    UnknownJobError,
)

SRC = Path(tierflow.__file__).parent
README = Path(__file__).parents[2] / "README.md"
NOW = datetime(2026, 11, 1, 1, tzinfo=UTC)


def defined_exceptions() -> dict[str, str]:
    """Every public exception class defined in the library (not `tierflow.testing`, the test
    harness, whose InfluxdError is about the throwaway server): name -> module."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if "testing" in parts or parts[-1] == "__main__":
            continue
        module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[name] = module.__name__
    return found


def test_every_exception_lives_in_errors_derives_from_the_root_and_is_exported() -> None:
    found = defined_exceptions()
    assert found, "the scan found no exception classes"
    assert {name: where for name, where in found.items() if where != "tierflow._errors"} == {}
    for name in found:
        cls = getattr(tierflow, name)
        assert issubclass(cls, TierflowError), name
        assert name in tierflow.__all__, name
        assert cls.__doc__, name


def test_the_tree_keeps_what_callers_rely_on() -> None:
    assert issubclass(tierflow.ArchiveMismatchError, tierflow.ArchiveError)
    assert not tierflow.ArchiveMismatchError("x").__class__.__mro__.count(EngineError)
    assert issubclass(tierflow.LineProtocolError, ValueError)
    assert issubclass(tierflow.JobRedefinedError, ConfigError)
    assert issubclass(tierflow.CircuitOpenError, EngineError)
    assert issubclass(tierflow.WriteRefusedError, EngineError)
    assert issubclass(tierflow.FluxResultError, tierflow.QueryError)
    # Every module that used to define an error still offers it under its old name.
    from tierflow._apply import ApplyRefusedError
    from tierflow._archive import ArchiveError
    from tierflow._archiving import ArchiveMismatchError
    from tierflow._resilience import CircuitOpenError
    from tierflow._transfer import WriteRefusedError

    assert ApplyRefusedError is tierflow.ApplyRefusedError
    assert ArchiveError is tierflow.ArchiveError
    assert ArchiveMismatchError is tierflow.ArchiveMismatchError
    assert CircuitOpenError is tierflow.CircuitOpenError
    assert WriteRefusedError is tierflow.WriteRefusedError


def test_every_exported_name_resolves_and_has_a_docstring() -> None:
    assert sorted(tierflow.__all__) == tierflow.__all__
    assert len(set(tierflow.__all__)) == len(tierflow.__all__)
    for name in tierflow.__all__:
        value = getattr(tierflow, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        assert inspect.getdoc(value), f"tierflow.{name} has no docstring"
    # Nothing public beyond `__all__` (subpackages such as `tierflow.testing` aside).
    public = {
        name
        for name, value in vars(tierflow).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public - set(tierflow.__all__) - {"annotations"} == set()


def test_the_readme_documents_the_python_api() -> None:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    for name in ("open", "serve", "Config.from_mapping", "TierflowError"):
        assert name in section, name
    for method in (
        "run_once",
        "plan",
        "backfill",
        "requeue",
        "status",
        "history",
        "validate",
        "apply",
        "restore",
        "archive_verify",
        "archive_query",
    ):
        assert method in section, method
        assert inspect.iscoroutinefunction(getattr(tierflow.Tierflow, method)), method
    for name in re.findall(r"tierflow\.(\w+)", section):
        assert name in tierflow.__all__, name


def test_import_tierflow_loads_no_cli_and_no_heavy_optional_packages() -> None:
    heavy = (
        "typer",
        "rich",
        "pyarrow",
        "influxdb_client",
        "boto3",
        "botocore",
        "duckdb",
        "psycopg",
        "psycopg_pool",
    )
    script = (
        "import sys, tierflow; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def config(**job: Any) -> dict[str, Any]:
    return {
        "state": {"url": "memory://"},
        "connections": {"plant": {"kind": "influxdb1", "url": "http://127.0.0.1:9"}},
        "tiers": {
            "hot": {"connection": "plant", "bucket": "plant"},
            "warm": {"connection": "plant", "bucket": "plant_5m"},
        },
        "jobs": {
            "sensor_5m": {
                "kind": "downsample",
                "source": "hot",
                "dest": "warm",
                "every": "5m",
                "measurements": ["sensor"],
                "start": "2026-11-01T00:00:00Z",
                "aggregates": {"temp": ["mean"]},
            }
            | job
        },
    }


def test_a_config_from_a_dict_is_checked_like_a_file_naming_the_key_path() -> None:
    loaded = tierflow.Config.from_mapping(config())
    assert list(loaded.jobs) == ["sensor_5m"]
    with pytest.raises(ConfigError) as caught:
        tierflow.Config.from_mapping(config(every="soon"))
    assert "[jobs.sensor_5m] every" in str(caught.value)
    assert type(caught.value) is ConfigError  # never pydantic's ValidationError


def test_a_bad_toml_config_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tierflow.toml"
    path.write_text("[jobs.x]\nkind = 'downsample'\nevery = 5\n")
    with pytest.raises(ConfigError, match=r"tierflow\.toml"):
        tierflow.load_config(path)


def test_open_plans_and_reports_status_with_aware_instants() -> None:
    async def go() -> tuple[list[tierflow.JobPlan], tierflow.Status]:
        async with tierflow.open(config()) as tf:
            return await tf.plan(NOW), await tf.status(now=NOW)

    plans, statuses = asyncio.run(go())
    assert [len(p.windows) for p in plans] == [12]  # [00:00, 01:00) in 5-minute windows
    assert statuses[0].pending_windows == 12
    # A Status is its jobs' statuses in order (as `status` returned before it showed workers),
    # and the workers: none, for no daemon ran.
    assert list(statuses) == list(statuses.jobs)
    assert len(statuses) == 1
    (only,) = statuses
    assert only is statuses.jobs[0]
    assert (statuses.now, statuses.workers) == (NOW, ())
    with pytest.raises(InvalidInputError, match="no time zone"):
        asyncio.run(tierflow.open(config()).plan(datetime(2026, 11, 1)))  # noqa: DTZ001


def test_the_api_refuses_unknown_jobs_and_backward_ranges() -> None:
    async def go() -> None:
        async with tierflow.open(config()) as tf:
            with pytest.raises(UnknownJobError):
                await tf.history("nope")
            with pytest.raises(InvalidInputError, match="not before"):
                await tf.backfill("sensor_5m", NOW, NOW)

    asyncio.run(go())


def test_an_unreachable_server_is_an_engine_error_not_a_driver_error() -> None:
    cfg = config()
    cfg["connections"]["plant"]["retry"] = {"attempts": 1}

    async def go() -> list[tierflow.BatchRun]:
        async with tierflow.open(cfg) as tf:
            with pytest.raises(EngineError):
                await tf.engine("plant").ping()
            return await tf.run_once(now=NOW)

    runs = asyncio.run(go())
    assert runs
    assert all(run.status is tierflow.RunStatus.FAILED for run in runs)
    assert all("internal error" not in (run.error or "") for run in runs)


def test_a_corrupt_state_file_raises_state_error(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"this is not a database" * 100)

    async def go() -> None:
        async with tierflow.open(config(), state=f"sqlite:///{state}") as tf:
            await tf.status(now=NOW)

    with pytest.raises(StateError):
        asyncio.run(go())
    assert not issubclass(StateError, sqlite3.Error)


def test_runner_is_an_async_context_manager() -> None:
    async def go() -> None:
        loaded = tierflow.Config.from_mapping(config())
        async with tierflow.Runner(loaded, tierflow.MemoryStateStore()) as runner:
            assert await runner.plan(NOW)

    asyncio.run(go())


def test_serve_stops_when_asked() -> None:
    async def go() -> None:
        stopping = asyncio.Event()
        stopping.set()
        await tierflow.serve(config(), stopping=stopping, signals=False)

    asyncio.run(go())
