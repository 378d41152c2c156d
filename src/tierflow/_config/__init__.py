"""The declarative configuration: frozen, validated models loaded from TOML.

Raw dicts never travel past `load_config`. Every problem is reported at once, each naming the file,
the table, the key and the offending value, so that one edit fixes them all.

The package holds the models (`_models`), the cross-checks between tables (`_checks`), one
problem's shape (`_problems`) and loading (`_load`).
"""

from __future__ import annotations

from tierflow._config._load import load_config, parse_config
from tierflow._config._models import (
    AGGREGATES,
    DEFAULT_CONFIG,
    DEFAULT_STATE_URL,
    ArchiveJob,
    CircuitConfig,
    Config,
    ConnectionConfig,
    DownsampleJob,
    InfluxDB1Connection,
    InfluxDB2Connection,
    JobConfig,
    QueryJob,
    RetryConfig,
    SchedulerConfig,
    ServerConfig,
    StateConfig,
    TierConfig,
)

__all__ = [
    "AGGREGATES",
    "DEFAULT_CONFIG",
    "DEFAULT_STATE_URL",
    "ArchiveJob",
    "CircuitConfig",
    "Config",
    "ConnectionConfig",
    "DownsampleJob",
    "InfluxDB1Connection",
    "InfluxDB2Connection",
    "JobConfig",
    "QueryJob",
    "RetryConfig",
    "SchedulerConfig",
    "ServerConfig",
    "StateConfig",
    "TierConfig",
    "load_config",
    "parse_config",
]
