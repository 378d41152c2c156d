"""Measurement patterns against a second implementation: Go's own `regexp` (what InfluxDB
compiles an InfluxQL `/regex/` with), run as `tests/re2match` (stdlib only, built here with
Debian's Go, which scripts/bootstrap installs). For generated patterns: every pattern tierflow
accepts, Go accepts too, and both select the same names among generated ones; and the
constructs tierflow refuses are the ones the two read differently (seen here in Go)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierflow._config._patterns import parse_pattern

HERE = Path(__file__).parents[1] / "re2match"


class Re2:
    def __init__(self, binary: Path) -> None:
        self._process = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, pattern: str, names: list[str]) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"pattern": pattern, "names": names}) + "\n")
        self._process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._process.stdout.readline())
        return answer

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)


@pytest.fixture(scope="module")
def re2() -> Iterator[Re2]:
    go = shutil.which("go")
    if go is None:
        pytest.fail("the pattern tests need Debian's Go: run scripts/bootstrap", pytrace=False)
    with tempfile.TemporaryDirectory() as scratch:
        binary = Path(scratch) / "re2match"
        env = {**os.environ, "GO111MODULE": "off", "GOFLAGS": "", "GOCACHE": scratch + "/cache"}
        # GOPATH mode takes a package by a relative path (an absolute one is an import path).
        subprocess.run(
            [go, "build", "-o", str(binary), "./re2match"], check=True, env=env, cwd=HERE.parent
        )
        oracle = Re2(binary)
        try:
            yield oracle
        finally:
            oracle.close()


def influxql_source(text: str) -> str:
    """What InfluxQL's scanner hands Go for the literal `text`: `\\/` unescaped, nothing else."""
    return text[1:-1].replace("\\/", "/")


PIECES = [
    *"abcKks0_-.é/",
    *["\\d", "\\D", "\\w", "\\W", "\\b", "\\B", "\\.", "\\/", "\\A", "\\z", "\\Z", "\\x41"],
    *["\\s", "\\S", "\\u00e9", "\\1", "\\12", "\\123", "\\0", "\\t", "\\v"],
    *["^", "$", "*", "+", "?", "*?", "+?", "??", "{2}", "{1,2}", "{,2}", "{2,}", "{1001}"],
    *["(", ")", "(?:", "(?P<n>", "(?=", "(?!", "(?<=", "(?i)", "(?s)", "(?m)", "(?i:", "(?U)"],
    *[
        "(?#x)",
        "(?u)",
        "|",
        "[",
        "]",
        "[a-c]",
        "[^a]",
        "[]a]",
        "[\\]]",
        "[[:alpha:]]",
        "[a[:digit:]]",
    ],
    *["[\\s]", "[\\d_]", "[\\b]", "[a-]", "[-a]", "{", "}", "*+", "(?>", "(?(1)a|b)"],
]
NAMES = "abcKks0_-. é\u212a\u017f\x0b\t[]:{},/\u0663"


@settings(max_examples=600, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=7),
    # A measurement name is never empty (line protocol); Python's \B never matches "", RE2's does.
    names=st.lists(st.text(alphabet=NAMES, min_size=1, max_size=6), min_size=1, max_size=12),
)
def test_an_accepted_pattern_selects_what_influxdb_would(
    re2: Re2, pieces: list[str], names: list[str]
) -> None:
    text = "/" + "".join(pieces) + "/"
    try:
        pattern = parse_pattern(text)
    except ValueError:
        return  # refused: stricter than RE2 is allowed, reading differently is not
    answer = re2.ask(influxql_source(text), names)
    assert answer.get("error") is None, (text, answer)
    assert [pattern.matches(name) for name in names] == answer["matches"], (text, names)


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("(?i)k", ["\u212a"]),  # RE2 folds k with the Kelvin sign; Python's ASCII mode does not
        ("\\s", ["\x0b"]),  # RE2's \s has no \v
        ("x{,3}", ["{,3}"]),  # text to RE2, a repeat (of none or more x) to Python
        ("[[:alpha:]]", ["a"]),  # a POSIX class to RE2, characters to Python
        ("[\\b]", ["\b"]),  # a backspace to Python, refused by RE2
    ],
)
def test_what_is_refused_is_read_otherwise_by_go(re2: Re2, source: str, names: list[str]) -> None:
    with pytest.raises(ValueError, match="read differently"):
        parse_pattern(f"/{source}/")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        python = [bool(re.search(source, name, re.ASCII)) for name in names]
    go = re2.ask(source, names)
    assert go.get("error") or go["matches"] != python
