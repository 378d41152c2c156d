"""The declarative configuration: frozen, validated models loaded from TOML.

Raw dicts never travel past `load_config`. Every problem is reported at once, each naming the file,
the table, the key and the offending value, so that one edit fixes them all.

The package holds the models (`_models`), the cross-checks between tables (`_checks`), one
problem's shape (`_problems`) and loading (`_load`).
"""

from __future__ import annotations

from tierflow._config import _models
from tierflow._config._load import load_config, parse_config
from tierflow._config._models import *  # noqa: F403 - every model `_models.__all__` lists

__all__ = ["load_config", "parse_config"]
__all__ += _models.__all__  # the models, each exported as `_models` declares
