"""tierflow: orchestrates the life of InfluxDB time-series data on UTC-aligned windows."""

from __future__ import annotations

from tierflow._config import Config, load_config
from tierflow._engines import Engine, Execution, InfluxQLEngine
from tierflow._errors import (
    ConfigError,
    EngineError,
    QueryError,
    SecretError,
    StateError,
    TemplateError,
    TierflowError,
    TransientEngineError,
    UnknownJobError,
)
from tierflow._planner import Batch
from tierflow._runner import BatchRun, JobPlan, JobStatus, Runner, WindowRun
from tierflow._state import (
    MemoryStateStore,
    RunStatus,
    SqliteStateStore,
    StateStore,
    open_state_store,
)
from tierflow._windows import CronSchedule, IntervalSchedule, Window

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchRun",
    "Config",
    "ConfigError",
    "CronSchedule",
    "Engine",
    "EngineError",
    "Execution",
    "InfluxQLEngine",
    "IntervalSchedule",
    "JobPlan",
    "JobStatus",
    "MemoryStateStore",
    "QueryError",
    "RunStatus",
    "Runner",
    "SecretError",
    "SqliteStateStore",
    "StateError",
    "StateStore",
    "TemplateError",
    "TierflowError",
    "TransientEngineError",
    "UnknownJobError",
    "Window",
    "WindowRun",
    "__version__",
    "load_config",
    "open_state_store",
]
