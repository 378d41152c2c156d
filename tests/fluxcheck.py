"""The official Flux checker, for the tests: `tests/flux/checker.js` (npm
`@influxdata/flux-lsp-node`, libflux as WebAssembly) run once per test session as a long-lived
node process, asked over JSON lines. Starting node per script would cost ~0.3 s each.

`scripts/bootstrap` installs it (`npm ci` in tests/flux); a missing node or package fails the
tests that need it, it never skips them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent / "flux"

__all__ = ["FluxChecker", "flux_checker", "string_literals", "walk"]


class FluxChecker:
    """Ask the official checker whether scripts are valid Flux, and for their AST."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None or not (HERE / "node_modules" / "@influxdata" / "flux-lsp-node").is_dir():
            pytest.fail(
                "the Flux checker needs node and tests/flux/node_modules: run scripts/bootstrap",
                pytrace=False,
            )
        self._process = subprocess.Popen(
            [node, str(HERE / "checker.js")],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self._lock = threading.Lock()

    def _ask(self, script: str, *, ast: bool) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps({"script": script, "ast": ast}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the Flux checker process died")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the Flux checker threw: {answer['error']}")
        return answer

    def is_valid(self, script: str) -> bool:
        """`new Flux(script).is_valid()`: parses and type-checks against the standard library."""
        return bool(self._ask(script, ast=False)["valid"])

    def ast(self, script: str) -> dict[str, Any]:
        """The official parser's AST of `script`."""
        tree: dict[str, Any] = self._ask(script, ast=True)["ast"]
        return tree

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)


@pytest.fixture(scope="session")
def flux_checker() -> Iterator[FluxChecker]:
    checker = FluxChecker()
    try:
        yield checker
    finally:
        checker.close()


def walk(node: object) -> Iterator[dict[str, Any]]:
    """Every AST node under `node`, depth first. The call of a pipe (`|> f()`) comes without a
    `type`; it is given `CallExpression` here."""
    if isinstance(node, dict):
        if "type" in node:
            yield node
        elif "callee" in node:
            yield {**node, "type": "CallExpression"}
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def string_literals(tree: dict[str, Any]) -> list[str]:
    """The values of every StringLiteral in an AST, in source order."""
    return [n["value"] for n in walk(tree) if n["type"] == "StringLiteral"]
