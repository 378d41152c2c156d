"""tierflow: orchestrates the life of InfluxDB time-series data on UTC-aligned windows.

    async with tierflow.open("tierflow.toml") as tf:
        runs = await tf.run_once()

`open` gives a `Tierflow` (run-once, backfill, status, history, requeue, restore, apply,
validate, archive verify/query); `serve` runs the daemon; `Config.from_mapping` builds a config
from a dict; every error is a `TierflowError`.
"""

from __future__ import annotations

from tierflow._api import Status, Tierflow, Validation, open
from tierflow._config import Config, load_config
from tierflow._daemon import serve
from tierflow._engines import Engine, Execution, InfluxQLEngine
from tierflow._errors import (
    ApplyError,
    ApplyRefusedError,
    ArchiveError,
    ArchiveMismatchError,
    AuthError,
    CircuitOpenError,
    ConfigError,
    EngineError,
    FluxResultError,
    FluxSyntaxError,
    InvalidInputError,
    JobRedefinedError,
    LineProtocolError,
    NetworkError,
    ObjectNotFoundError,
    QueryError,
    SecretError,
    StateError,
    StateUnavailableError,
    TemplateError,
    TierflowError,
    TransientEngineError,
    UnknownJobError,
    UnsafeQueryError,
    WriteRefusedError,
)
from tierflow._planner import Batch
from tierflow._runner import BatchRun, JobPlan, JobStatus, Runner, WindowRun
from tierflow._state import (
    Attempt,
    LedgerEntry,
    MemoryStateStore,
    RunStatus,
    SqliteStateStore,
    StateStore,
    Worker,
    WorkerState,
    open_state_store,
)
from tierflow._windows import CronSchedule, IntervalSchedule, Window

__version__ = "0.1.0"

__all__ = [
    "ApplyError",
    "ApplyRefusedError",
    "ArchiveError",
    "ArchiveMismatchError",
    "Attempt",
    "AuthError",
    "Batch",
    "BatchRun",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "CronSchedule",
    "Engine",
    "EngineError",
    "Execution",
    "FluxResultError",
    "FluxSyntaxError",
    "InfluxQLEngine",
    "IntervalSchedule",
    "InvalidInputError",
    "JobPlan",
    "JobRedefinedError",
    "JobStatus",
    "LedgerEntry",
    "LineProtocolError",
    "MemoryStateStore",
    "NetworkError",
    "ObjectNotFoundError",
    "QueryError",
    "RunStatus",
    "Runner",
    "SecretError",
    "SqliteStateStore",
    "StateError",
    "StateStore",
    "StateUnavailableError",
    "Status",
    "TemplateError",
    "Tierflow",
    "TierflowError",
    "TransientEngineError",
    "UnknownJobError",
    "UnsafeQueryError",
    "Validation",
    "Window",
    "WindowRun",
    "Worker",
    "WorkerState",
    "WriteRefusedError",
    "__version__",
    "load_config",
    "open",
    "open_state_store",
    "serve",
]
