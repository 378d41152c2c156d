"""A small, honest Flux tokenizer, and a finder of calls and their named arguments.

Enough of Flux's lexical grammar (the Flux SPEC: comments, identifiers, string literals with
escapes and `${…}` interpolation, regex literals, integers, floats, durations, date-time literals,
operators and punctuation) to find every call in a script and what each named argument holds,
so that validation reasons about tokens, never about regexes over raw text. It does not build
an AST: checks that need one run the official parser in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from tierflow._errors import FluxSyntaxError

__all__ = [
    "Call",
    "FluxSyntaxError",
    "Kind",
    "Token",
    "calls",
    "parse_time",
    "statements",
    "tokenize",
]


class Kind(StrEnum):
    IDENT = "ident"
    INT = "int"
    FLOAT = "float"
    DURATION = "duration"
    TIME = "time"
    STRING = "string"
    REGEX = "regex"
    OP = "op"
    NEWLINE = "newline"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    line: int
    #: A string literal's value; None for strings with interpolation, and for other kinds.
    value: str | None = None
    #: Where the token starts in the script (its text follows): what a rewrite of the script
    #: (`tierflow import influxdb2`) splices at. Not part of a token's identity.
    start: int = field(default=-1, compare=False)


_DATE = r"\d{4}-\d{2}-\d{2}"
_TIME = re.compile(_DATE + r"(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?")
_DURATION = re.compile(r"(\d+(mo|ms|us|µs|ns|y|w|d|h|m|s))+")
_FLOAT = re.compile(r"\d+\.\d*|\.\d+")
_INT = re.compile(r"\d+")
_OPS = ("|>", "<-", "=>", "==", "!=", "<=", ">=", "=~", "!~")
_SINGLE = "+-*/%^<>=()[]{},:.?"
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}
# After these, a `/` divides; anywhere else it opens a regex literal.
_OPERANDS = {Kind.IDENT, Kind.INT, Kind.FLOAT, Kind.DURATION, Kind.TIME, Kind.STRING}


def tokenize(script: str) -> list[Token]:
    """The script's tokens (comments dropped, newlines kept as NEWLINE tokens)."""
    return list(_Lexer(script).tokens())


@dataclass
class _Lexer:
    text: str
    pos: int = 0
    line: int = 1
    out: list[Token] = field(default_factory=list)

    def tokens(self) -> Iterator[Token]:
        while self.pos < len(self.text):
            token = self._next()
            if token is not None:
                self.out.append(token)
                yield token

    def _fail(self, message: str) -> FluxSyntaxError:
        return FluxSyntaxError(f"Flux line {self.line}: {message}")

    def _next(self) -> Token | None:
        text, pos = self.text, self.pos
        char = text[pos]
        if char == "\n":
            self.pos += 1
            self.line += 1
            return Token(Kind.NEWLINE, "\n", self.line - 1, start=pos)
        if char in " \t\r":
            self.pos += 1
            return None
        if text.startswith("//", pos):
            end = text.find("\n", pos)
            self.pos = len(text) if end < 0 else end
            return None
        if char == '"':
            return self._string()
        if char.isdigit() or (char == "." and text[pos + 1 : pos + 2].isdigit()):
            return self._number()
        if char.isalpha() or char == "_":
            end = pos + 1
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            return self._take(Kind.IDENT, end)
        if char == "/" and not self._after_operand():
            return self._regex()
        for op in _OPS:
            if text.startswith(op, pos):
                return self._take(Kind.OP, pos + len(op))
        if char in _SINGLE:
            return self._take(Kind.OP, pos + 1)
        raise self._fail(f"unexpected character {char!r}")

    def _after_operand(self) -> bool:
        """Whether the last token ends an operand (then `/` divides, else it opens a regex)."""
        if not self.out:
            return False
        last = self._last()
        return last.kind in _OPERANDS | {Kind.REGEX} or last.text in {")", "]", "}"}

    def _last(self) -> Token:
        for token in reversed(self.out):
            if token.kind is not Kind.NEWLINE:
                return token
        return self.out[-1]

    def _take(self, kind: Kind, end: int, value: str | None = None) -> Token:
        token = Token(kind, self.text[self.pos : end], self.line, value, self.pos)
        self.line += token.text.count("\n")
        self.pos = end
        return token

    def _number(self) -> Token:
        for kind, pattern in (
            (Kind.TIME, _TIME),
            (Kind.DURATION, _DURATION),
            (Kind.FLOAT, _FLOAT),
            (Kind.INT, _INT),
        ):
            match = pattern.match(self.text, self.pos)
            if match:
                end = match.end()
                if end < len(self.text) and (self.text[end].isalnum() or self.text[end] == "_"):
                    continue  # `1x`: not this kind of literal
                return self._take(kind, end)
        raise self._fail(f"malformed number near {self.text[self.pos : self.pos + 12]!r}")

    def _string(self) -> Token:
        text, i = self.text, self.pos + 1
        value: list[str] = []
        plain = True
        while True:
            if i >= len(text):
                raise self._fail("unterminated string literal")
            char = text[i]
            if char == '"':
                return self._take(Kind.STRING, i + 1, "".join(value) if plain else None)
            if char == "\\":
                escaped = text[i + 1 : i + 2]
                if escaped == "x":
                    digits = text[i + 2 : i + 4]
                    if not re.fullmatch(r"[0-9a-fA-F]{2}", digits):
                        raise self._fail("bad \\x escape in a string literal")
                    value.append(chr(int(digits, 16)))
                    i += 4
                    continue
                if escaped not in _ESCAPES:
                    raise self._fail(f"bad escape \\{escaped} in a string literal")
                value.append(_ESCAPES[escaped])
                i += 2
                continue
            if text.startswith("${", i):
                plain = False
                i = self._skip_interpolation(i + 2)
                continue
            value.append(char)
            i += 1

    def _skip_interpolation(self, i: int) -> int:
        """Past the `}` closing an interpolation that starts at `i` (nested strings and braces
        are lexed as Flux, so a `}` inside a nested string does not close it)."""
        inner = _Lexer(self.text, i, self.line)
        depth = 0
        while inner.pos < len(self.text):
            if self.text[inner.pos] == "}" and depth == 0:
                return inner.pos + 1
            token = inner._next()
            if token is not None:
                inner.out.append(token)
                depth += {"{": 1, "}": -1}.get(token.text, 0) if token.kind is Kind.OP else 0
        raise self._fail("unterminated ${ interpolation")

    def _regex(self) -> Token:
        text, i = self.text, self.pos + 1
        while i < len(text) and text[i] != "/":
            if text[i] == "\n":
                raise self._fail("unterminated regex literal")
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise self._fail("unterminated regex literal")
        return self._take(Kind.REGEX, i + 1)


@dataclass(frozen=True, slots=True)
class Call:
    """A call such as `range(start: …, stop: …)`: its (dotted) name and its named arguments,
    each the tokens of its value expression."""

    name: str
    line: int
    args: dict[str, tuple[Token, ...]]
    #: Set when the arguments are not a plain `name: value` list (e.g. a record passed whole).
    opaque: bool = False


def _significant(tokens: Sequence[Token]) -> list[Token]:
    return [t for t in tokens if t.kind is not Kind.NEWLINE]


def calls(tokens: Sequence[Token]) -> list[Call]:
    """Every call in the token stream, nested ones included, in source order."""
    items = _significant(tokens)
    found: list[Call] = []
    for index, token in enumerate(items):
        if token.kind is not Kind.IDENT or index + 1 >= len(items):
            continue
        if items[index + 1].text != "(" or items[index + 1].kind is not Kind.OP:
            continue
        name, start = token.text, index
        # a dotted callee written `pkg.fn(`: walk back over `ident .` pairs
        while start >= 2 and items[start - 1].text == "." and items[start - 2].kind is Kind.IDENT:
            start -= 2
            name = items[start].text + "." + name
        found.append(_call(name, token.line, items, index + 1))
    return found


def _call(name: str, line: int, items: Sequence[Token], open_index: int) -> Call:
    close = _matching(items, open_index)
    inner = items[open_index + 1 : close]
    if not inner:
        return Call(name, line, {})
    args: dict[str, tuple[Token, ...]] = {}
    for part in _split_commas(inner):
        if len(part) >= 2 and part[0].kind is Kind.IDENT and part[1].text == ":":
            args[part[0].text] = tuple(part[2:])
        elif len(part) == 1 and part[0].kind is Kind.IDENT:
            args[part[0].text] = (part[0],)  # shorthand `f(a)` means `f(a: a)`
        else:
            return Call(name, line, args, opaque=True)
    return Call(name, line, args)


def _matching(items: Sequence[Token], open_index: int) -> int:
    depth = 0
    pairs = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}
    for index in range(open_index, len(items)):
        token = items[index]
        if token.kind is Kind.OP and token.text in pairs:
            depth += pairs[token.text]
            if depth == 0:
                return index
    raise FluxSyntaxError(f"Flux line {items[open_index].line}: unbalanced parenthesis")


def _split_commas(items: Sequence[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in items:
        if token.kind is Kind.OP and token.text in "([{":
            depth += 1
        elif token.kind is Kind.OP and token.text in ")]}":
            depth -= 1
        if depth == 0 and token.kind is Kind.OP and token.text == ",":
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


def statements(tokens: Sequence[Token]) -> list[list[Token]]:
    """The script's top-level statements: a newline at bracket depth 0 ends one unless the next
    line continues it (starts with `|>` or another binary operator) or this one is unfinished."""
    result: list[list[Token]] = [[]]
    depth = 0
    for index, token in enumerate(tokens):
        if token.kind is Kind.OP and token.text in "([{":
            depth += 1
        elif token.kind is Kind.OP and token.text in ")]}":
            depth -= 1
        if token.kind is Kind.NEWLINE:
            if depth == 0 and result[-1] and not _continues(result[-1], tokens[index + 1 :]):
                result.append([])
            continue
        result[-1].append(token)
    return [statement for statement in result if statement]


_BINARY = {
    "|>",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "=~",
    "!~",
    "=",
    "=>",
    ".",
    ",",
    ":",
    "and",
    "or",
    "else",
    "then",
    "if",
    "not",
    "<-",
    "?",
}


def _continues(current: Sequence[Token], rest: Sequence[Token]) -> bool:
    following = next((t for t in rest if t.kind is not Kind.NEWLINE), None)
    if current[-1].text in _BINARY and current[-1].kind in {Kind.OP, Kind.IDENT}:
        return True
    return following is not None and following.text in _BINARY - {"-", "not", "if"}


def parse_time(token: Token) -> datetime | None:
    """The instant a TIME token denotes (a bare date is midnight UTC)."""
    if token.kind is not Kind.TIME:
        return None
    text = token.text
    if "T" not in text:
        text += "T00:00:00Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
