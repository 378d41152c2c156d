"""What `tierflow validate` checks beyond the config's shape and the queries: that the optional
packages the config needs are installed (the pip command if not, rather than an import error at
run time), and what is allowed but likely a mistake (warnings: a start in the future)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import datetime

from tierflow._config import Config
from tierflow._engines import dialect_for
from tierflow._secrets import AwsSecret, VaultSecret
from tierflow._validation import Problem
from tierflow._windows import isoformat

__all__ = ["missing_extras", "warnings_for"]


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _needs(config: Config) -> Iterator[tuple[str, str, str, str]]:
    """(where, what needs it, module, extra) for each optional package the config uses."""
    for name, connection in config.connections.items():
        where = f"connection {name}"
        dialect = dialect_for(connection)
        if dialect.client_module is not None:
            module, extra = dialect.client_module
            yield where, f"kind {dialect.kind}", module, extra
        _, secret = dialect.secret(connection)
        if isinstance(secret, VaultSecret):
            yield where, "a vault secret", "hvac", "vault"
        elif isinstance(secret, AwsSecret):
            yield where, "an aws secret", "boto3", "aws"
    for name, tier in config.tiers.items():
        if tier.archive is not None and tier.archive.startswith("s3://"):
            for module in ("fsspec", "s3fs"):
                yield f"tier {name}", "an s3:// archive", module, "archive-s3"


def missing_extras(config: Config) -> list[Problem]:
    """One problem per optional package the config needs and this install lacks."""
    return [
        Problem(f"{where}: {what} needs {module}, not installed: pip install 'tierflow[{extra}]'")
        for where, what, module, extra in dict.fromkeys(_needs(config))
        if not _importable(module)
    ]


def warnings_for(config: Config, now: datetime) -> list[str]:
    """What the config allows but is likely a mistake."""
    return [
        f"job {name}: start {isoformat(spec.start)} is in the future: "
        "no window of it runs before then"
        for name, spec in config.jobs.items()
        if spec.start > now
    ]
