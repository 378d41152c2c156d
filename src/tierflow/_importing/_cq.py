"""InfluxDB 1.x continuous queries, read as the server returns them (`SHOW CONTINUOUS QUERIES`).

The server keeps a CQ normalised (seen on 1.6.7): every name fully qualified with the database and
the retention policy that was the default when the CQ was made (`FROM tele.autogen.sensor`,
`INTO tele.warm.:MEASUREMENT`), identifiers quoted only where they must be, keywords upper-case
(`TZ('…')`), a default `fill(null)` dropped. This module reads that text with a tokenizer and a
small recursive reader of the clauses, never with regexes over the whole statement, and keeps each
clause's exact source text so a template can carry it over byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from tierflow._errors import InvalidInputError

__all__ = [
    "ContinuousQuery",
    "Dimension",
    "Name",
    "SelectField",
    "Token",
    "parse_continuous_query",
    "tokens",
]


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<ident>"(?:[^"\\\n]|\\.)*")
  | (?P<string>'(?:[^'\\\n]|\\.)*')
  | (?P<duration>\d+(?:ns|ms|u|µ|s|m|h|d|w)(?![A-Za-z0-9_]))
  | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<regex>/(?:[^/\\\n]|\\.)*/)
  | (?P<op>>=|<=|!=|<>|=~|!~|::|[-+*/%=<>(),.;:&|^])
    """,
    re.VERBOSE | re.DOTALL,
)
# InfluxQL's scanner (influxql/scanner.go, ScanString) knows these escapes; any other is an error.
_UNESCAPE = {"\\": "\\", '"': '"', "'": "'", "n": "\n"}
_UNITS = {
    "ns": timedelta(0),  # checked below: nanoseconds only as whole microseconds
    "u": timedelta(microseconds=1),
    "µ": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# Words that end a clause of a SELECT at paren depth 0.
_CLAUSES = ("into", "from", "where", "group", "fill", "order", "limit", "offset", "slimit")
_TAIL = frozenset({"fill", "order", "limit", "offset", "slimit", "soffset", "tz"})


@dataclass(frozen=True, slots=True)
class Token:
    """One token: `kind` is ident (bare word or quoted), string, duration, number, regex or op;
    `value` is an identifier's or string's unquoted value; `start`/`end` index the text."""

    kind: str
    text: str
    value: str
    start: int
    end: int

    def word(self, *words: str) -> bool:
        """Whether this is the bare keyword (`"time"` quoted is a name, `time` the keyword)."""
        return self.kind == "ident" and not self.text.startswith('"') and self.text.lower() in words

    def op(self, *ops: str) -> bool:
        return self.kind == "op" and self.text in ops


def tokens(text: str) -> list[Token]:
    """The tokens of InfluxQL `text`, without spaces and comments."""
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise InvalidInputError(f"unexpected character {text[pos]!r} at offset {pos}")
        kind, raw = match.lastgroup or "", match.group()
        start, pos = pos, match.end()
        if kind in {"space", "comment"}:
            continue
        if kind == "regex" and out and out[-1].kind in {"ident", "number", "string", "duration"}:
            # `a / b` is division, not a regex: re-read the slash as an operator.
            kind, raw, pos = "op", "/", start + 1
        if kind in {"ident", "string"}:
            value = re.sub(
                r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), "\\" + m.group(1)), raw[1:-1]
            )
            out.append(Token(kind, raw, value, start, pos))
        elif kind == "word":
            out.append(Token("ident", raw, raw, start, pos))
        else:
            out.append(Token(kind, raw, raw, start, pos))
    return out


def duration(token: Token) -> timedelta:
    """An InfluxQL duration literal (`5m`, `1h`, `90s`) as a timedelta (whole microseconds)."""
    digits = re.match(r"\d+", token.text)
    assert digits is not None
    count, unit = int(digits.group()), token.text[digits.end() :]
    if unit == "ns":
        if count % 1000:
            raise InvalidInputError(f"duration {token.text} is finer than a microsecond")
        return timedelta(microseconds=count // 1000)
    return count * _UNITS[unit]


@dataclass(frozen=True, slots=True)
class Name:
    """`[database.][policy.]measurement` of FROM or INTO: `measurement` None with `regex` for a
    regex source, None with `backreference` for INTO's `:MEASUREMENT`."""

    database: str | None
    policy: str | None
    measurement: str | None
    regex: str | None = None
    backreference: bool = False


@dataclass(frozen=True, slots=True)
class SelectField:
    """One SELECT expression: its exact text, and when it is `fn(field)` (optionally `AS x`),
    the function and field; `alias` when it says `AS`."""

    text: str
    function: str | None
    field: str | None
    alias: str | None

    @property
    def output(self) -> str | None:
        """The field name InfluxDB writes: the alias, or a lone call's function name; None when
        it depends on the data (`mean(*)` writes `mean_<field>` per field) or is not known here."""
        if self.alias is not None:
            return self.alias
        return self.function if self.field is not None else None


@dataclass(frozen=True, slots=True)
class Dimension:
    """A GROUP BY dimension other than time: a tag key, `*`, or a regex of tag keys."""

    kind: str  # tag, star, regex
    name: str


@dataclass(frozen=True, slots=True)
class ContinuousQuery:
    """A continuous query, read into its parts. `clauses` holds the exact source text of each
    clause of the SELECT (`select`, `into`, `from`, `where`, `group`, `fill`, `order`, `limit`,
    `offset`, `slimit`, `soffset`, `tz`) that is present."""

    name: str
    database: str
    text: str
    resample_every: timedelta | None
    resample_for: timedelta | None
    fields: tuple[SelectField, ...]
    into: Name
    sources: tuple[Name, ...]
    where: tuple[Token, ...]
    interval: timedelta
    offset: timedelta
    dimensions: tuple[Dimension, ...]
    fill: str | None
    clauses: dict[str, str]


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items = tokens(text)
        self.pos = 0

    def peek(self) -> Token | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise InvalidInputError("unexpected end of the query")
        self.pos += 1
        return token

    def expect_word(self, *words: str) -> Token:
        token = self.take()
        if not token.word(*words):
            raise InvalidInputError(f"expected {' '.join(words).upper()}, found {token.text!r}")
        return token

    def expect_op(self, op: str) -> Token:
        token = self.take()
        if not token.op(op):
            raise InvalidInputError(f"expected {op!r}, found {token.text!r}")
        return token

    def name(self) -> str:
        token = self.take()
        if token.kind != "ident":
            raise InvalidInputError(f"expected a name, found {token.text!r}")
        return token.value


def parse_continuous_query(name: str, text: str) -> ContinuousQuery:
    """Read `CREATE CONTINUOUS QUERY … BEGIN <select> END` as `SHOW CONTINUOUS QUERIES` gives it."""
    reader = _Reader(text)
    for word in ("create", "continuous", "query"):
        reader.expect_word(word)
    reader.name()
    reader.expect_word("on")
    database = reader.name()
    every = for_ = None
    if (token := reader.peek()) is not None and token.word("resample"):
        reader.take()
        while (token := reader.peek()) is not None and token.word("every", "for"):
            reader.take()
            value = reader.take()
            if value.kind != "duration":
                raise InvalidInputError(f"RESAMPLE {token.text.upper()} needs a duration")
            if token.word("every"):
                every = duration(value)
            else:
                for_ = duration(value)
    reader.expect_word("begin")
    body = reader.items[reader.pos :]
    if not body or not body[-1].word("end"):
        raise InvalidInputError("the query does not end with END")
    return _select(name, database, text, body[:-1], every, for_)


def _split_clauses(body: Sequence[Token]) -> dict[str, list[Token]]:
    clauses: dict[str, list[Token]] = {}
    current: list[Token] | None = None
    depth = 0
    for token in body:
        if depth == 0 and (token.word(*_CLAUSES, "select", "soffset", "tz")):
            key = token.text.lower()
            if key in clauses:
                raise InvalidInputError(f"{key.upper()} appears twice")
            current = clauses[key] = []
        if current is None:
            raise InvalidInputError(f"expected SELECT, found {token.text!r}")
        depth += 1 if token.op("(") else -1 if token.op(")") else 0
        current.append(token)
    return clauses


def _span(text: str, part: Sequence[Token]) -> str:
    return text[part[0].start : part[-1].end]


def _select(
    name: str,
    database: str,
    text: str,
    body: Sequence[Token],
    every: timedelta | None,
    for_: timedelta | None,
) -> ContinuousQuery:
    clauses = _split_clauses(body)
    for required in ("select", "into", "from", "group"):
        if required not in clauses:
            raise InvalidInputError(f"the query has no {required.upper()} clause")
    group = clauses["group"]
    if len(group) < 2 or not group[1].word("by"):
        raise InvalidInputError("expected GROUP BY")
    interval, offset, dimensions = _group_by(group[2:])
    fill = None
    if "fill" in clauses:
        fill_tokens = clauses["fill"]
        if len(fill_tokens) < 4 or not fill_tokens[1].op("(") or not fill_tokens[-1].op(")"):
            raise InvalidInputError("expected fill(…)")
        fill = _span(text, fill_tokens[2:-1]).lower()
    return ContinuousQuery(
        name=name,
        database=database,
        text=text,
        resample_every=every,
        resample_for=for_,
        fields=tuple(_field(text, part) for part in _comma_split(clauses["select"][1:])),
        into=_path(clauses["into"][1:], into=True),
        sources=tuple(_path(part, into=False) for part in _comma_split(clauses["from"][1:])),
        where=tuple(clauses.get("where", [])[1:]),
        interval=interval,
        offset=offset,
        dimensions=dimensions,
        fill=fill,
        clauses={key: _span(text, part) for key, part in clauses.items()},
    )


def _comma_split(part: Sequence[Token]) -> list[list[Token]]:
    pieces: list[list[Token]] = [[]]
    depth = 0
    for token in part:
        if depth == 0 and token.op(","):
            pieces.append([])
            continue
        depth += 1 if token.op("(") else -1 if token.op(")") else 0
        pieces[-1].append(token)
    if any(not piece for piece in pieces):
        raise InvalidInputError("an empty item in a list")
    return pieces


def _field(text: str, part: list[Token]) -> SelectField:
    alias = None
    if len(part) > 2 and part[-2].word("as") and part[-1].kind == "ident":
        alias = part[-1].value
        part = part[:-2]
    function = field = None
    if (
        len(part) == 4
        and part[0].kind == "ident"
        and part[1].op("(")
        and part[2].kind == "ident"
        and part[3].op(")")
    ):
        function, field = part[0].value.lower(), part[2].value
    return SelectField(_span(text, part), function, field, alias)


def _path(part: Sequence[Token], *, into: bool) -> Name:
    """`[db.][rp.]measurement`; the last part may be a regex (FROM) or `:MEASUREMENT` (INTO)."""
    segments: list[list[Token]] = [[]]
    for token in part:
        if token.op("."):
            segments.append([])
        else:
            segments[-1].append(token)
    if len(segments) > 3:
        raise InvalidInputError(f"{_joined(part)!r} is not [database.][policy.]measurement")
    *prefix, last = segments
    names: list[str | None] = [None] * (2 - len(prefix))
    names += [_single(segment) if segment else None for segment in prefix]
    if into and len(last) == 2 and last[0].op(":") and last[1].word("measurement"):
        return Name(names[0], names[1], None, backreference=True)
    if not into and len(last) == 1 and last[0].kind == "regex":
        return Name(names[0], names[1], None, regex=last[0].text)
    return Name(names[0], names[1], _single(last))


def _single(segment: Sequence[Token]) -> str:
    if len(segment) != 1 or segment[0].kind != "ident":
        raise InvalidInputError(f"{_joined(segment)!r} is not a name")
    return segment[0].value


def _joined(part: Sequence[Token]) -> str:
    return " ".join(token.text for token in part)


def _group_by(part: Sequence[Token]) -> tuple[timedelta, timedelta, tuple[Dimension, ...]]:
    interval: timedelta | None = None
    offset = timedelta(0)
    dimensions: list[Dimension] = []
    for piece in _comma_split(part):
        head = piece[0]
        if head.word("time") and len(piece) > 1 and piece[1].op("("):
            interval, offset = _time_dimension(piece)
        elif len(piece) == 1 and head.op("*"):
            dimensions.append(Dimension("star", "*"))
        elif len(piece) == 1 and head.kind == "regex":
            dimensions.append(Dimension("regex", head.text))
        elif len(piece) == 1 and head.kind == "ident":
            dimensions.append(Dimension("tag", head.value))
        else:
            raise InvalidInputError(f"unexpected GROUP BY dimension {_joined(piece)!r}")
    if interval is None:
        raise InvalidInputError("a continuous query needs GROUP BY time(…)")
    return interval, offset, tuple(dimensions)


def _time_dimension(piece: Sequence[Token]) -> tuple[timedelta, timedelta]:
    inner = list(piece[2:-1])
    if not piece[-1].op(")") or not inner or inner[0].kind != "duration":
        raise InvalidInputError(f"expected time(<interval>[, <offset>]), found {_joined(piece)!r}")
    interval = duration(inner[0])
    if interval <= timedelta(0):
        raise InvalidInputError("the GROUP BY time interval must be positive")
    rest = inner[1:]
    if not rest:
        return interval, timedelta(0)
    sign = 1
    if len(rest) == 3 and rest[1].op("-", "+"):
        sign = -1 if rest[1].op("-") else 1
        rest = [rest[0], rest[2]]
    if len(rest) != 2 or not rest[0].op(",") or rest[1].kind != "duration":
        raise InvalidInputError(f"unsupported GROUP BY time offset {_joined(piece)!r}")
    # InfluxQL takes the offset modulo the interval (influxql/ast.go, GroupByOffset).
    return interval, (sign * duration(rest[1])) % interval
