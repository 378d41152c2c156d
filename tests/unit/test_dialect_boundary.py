"""Outside the engine packages (`tierflow/_engines/<dialect>/`), no module compares a dialect or a
connection kind: it asks the connection's `Dialect` (found by the registry) instead. A pydantic
`Literal` discriminator is data, not a comparison, and is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import tierflow
from tierflow._engines import KINDS, dialect_for, dialects

SRC = Path(tierflow.__file__).parent
ENGINE_PACKAGES = {dialect_for(kind).package.rsplit(".", 1)[1] for kind in KINDS}

_NAMES = "|".join(
    re.escape(word) for dialect in dialects() for word in (dialect.name, dialect.kind)
)
FORBIDDEN = [
    re.compile(r"isinstance\([^)]*InfluxDB[12]Connection"),
    re.compile(r"\.dialect\s*[!=]=|[!=]=\s*[\w.]+\.dialect\b"),
    re.compile(r"connection\.kind\s*[!=]=|[!=]=\s*connection\.kind\b"),
    re.compile(rf"""[!=]=\s*["']({_NAMES})["']|["']({_NAMES})["']\s*[!=]="""),
    re.compile(rf"""\bin\s*\(\s*["']({_NAMES})["']"""),
    re.compile(rf"""\bgroups\(config,\s*["']({_NAMES})["']\)"""),
]


def _outside_engines() -> list[Path]:
    return [
        path
        for path in sorted(SRC.rglob("*.py"))
        if not (
            path.relative_to(SRC).parts[:1] == ("_engines",)
            and path.relative_to(SRC).parts[1:2][0] in ENGINE_PACKAGES
        )
    ]


def test_no_module_outside_the_engine_packages_compares_a_dialect_or_kind() -> None:
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in _outside_engines()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if not line.lstrip().startswith("#") and any(rule.search(line) for rule in FORBIDDEN)
    ]
    assert found == [], "dialect or kind compared outside the engine packages:\n" + "\n".join(found)


def test_the_boundary_check_sees_what_it_forbids() -> None:
    samples = [
        "if isinstance(connection, InfluxDB2Connection):",
        'if engine.dialect == "flux":',
        'if query.dialect != "influxql":',
        'where = tier.database if kind == "influxdb1" else tier.bucket',
        'return "flux" if x else "influxql"',
    ]
    caught = [line for line in samples if any(rule.search(line) for rule in FORBIDDEN)]
    assert caught == samples[:4]


def test_every_registered_kind_has_a_dialect_package_with_templates() -> None:
    for kind in KINDS:
        dialect = dialect_for(kind)
        assert dialect.kind == kind
        folder = SRC / "_engines" / dialect.package.rsplit(".", 1)[1] / "templates"
        assert (folder / f"downsample{dialect.template_suffix}").is_file()
        assert (folder / f"fingerprint{dialect.template_suffix}").is_file()
