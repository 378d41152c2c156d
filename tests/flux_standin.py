"""A stand-in of InfluxDB 2.x that keeps points and runs Flux: the subset tierflow's downsample
template and the engine contract suite's own template use, read through the official parser's
AST (`tests/fluxcheck.py`), over points held in memory.

It extends the recording stand-in (`tests/influx2_standin.py`, the request contract: paths, the
org, the token, annotated CSV) with what a server does with the requests: `to()` stores the
rows it passes on, `/api/v2/delete` deletes, and a script's result is its rows. Supported:
`from`, `range`, `filter` (`==`, `and`, `or` over the row's columns), `aggregateWindow` (`every`,
`offset`, `createEmpty: false`, `timeSrc: "_start"`, the aggregates below), `set`, `map`
(`{r with …}` and arithmetic), `union`, `to`, `yield`, and `keep |> group() |> distinct` (the
measurement listing). It also lists `tasks` (`GET
/api/v2/tasks`, for `tierflow import influxdb2`); it does not run them. Anything else fails
the request loudly (HTTP 400, "stand-in cannot run …"), so a test never passes on a script it
did not run.

What it computes follows the Flux documentation (windows aligned to the epoch plus `offset`,
clipped to the range, stamped at their start; `mean` of integers a float; `sum` keeps integers);
a real server is the final word (`tests/integration/test_engine_contract.py` with a live URL).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.fluxcheck import FluxChecker
from tests.influx2_standin import Answer, StandIn, annotated_csv, cell, rfc3339_nano

__all__ = ["FluxStandIn", "Record", "points_of"]

NS = 1_000_000_000
#: One row of a table: column → value (`_time`, `_start`, `_stop` in ns since the epoch).
Record = dict[str, Any]
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS}
_UNITS |= {"d": 86_400 * NS, "w": 7 * 86_400 * NS}
_KINDS = {float: "double", int: "long", bool: "boolean", str: "string"}
#: Marks rows `group()` put into one table (the stand-in keeps no group key of its own).
_UNGROUPED = "\x00ungrouped"


class CannotRunError(Exception):
    """The script uses Flux the stand-in does not run."""


def _fsum_mean(values: list[Any]) -> float:
    return math.fsum(values) / len(values)


def _sum(values: list[Any]) -> Any:
    return sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values)


#: Aggregates over a window's (time, value) pairs, in time order.
_AGGREGATES: dict[str, Callable[[list[tuple[int, Any]]], Any]] = {
    "mean": lambda rows: _fsum_mean([v for _, v in rows]),
    "sum": lambda rows: _sum([v for _, v in rows]),
    "count": len,
    "min": lambda rows: min(v for _, v in rows),
    "max": lambda rows: max(v for _, v in rows),
    "first": lambda rows: rows[0][1],
    "last": lambda rows: rows[-1][1],
    "spread": lambda rows: max(v for _, v in rows) - min(v for _, v in rows),
}


@dataclass
class FluxStandIn(StandIn):
    """The recording stand-in, plus buckets of points and a Flux subset that runs over them.
    `checker` parses scripts (the official parser, as a long-lived node process)."""

    checker: FluxChecker | None = None
    #: bucket → its points, one record per field value.
    stored: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    #: The org's tasks as `GET /api/v2/tasks` lists them (`id`, `name`, `status`, `flux`, …).
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def _answer(self, request: web.Request) -> Answer:
        token = request.headers.get("Authorization", "").removeprefix("Token ")
        if self.scripted.get(request.path) or token not in self.tokens:
            return super()._answer(request)
        if request.path == "/api/v2/query":
            try:
                return self._run(self.requests[-1].json()["query"])
            except CannotRunError as exc:
                return Answer(400, f'{{"code": "invalid", "message": "{exc}"}}'.encode())
        if request.path == "/api/v2/tasks" and request.method == "GET":
            return self._tasks(request.query)
        if request.path == "/api/v2/delete":
            body = self.requests[-1].json()
            self.delete(request.query["bucket"], body["start"], body["stop"], body["predicate"])
        return super()._answer(request)

    def _tasks(self, query: Any) -> Answer:
        """`GET /api/v2/tasks?org=&limit=&after=`: a page of the org's tasks, by id."""
        if query.get("org") != self.org:
            error = {
                "code": "not found",
                "message": f'organization name "{query.get("org")}" not found',
            }
            return Answer(404, json.dumps(error).encode(), {"Content-Type": "application/json"})
        listed = sorted(self.tasks, key=lambda t: str(t["id"]))
        if "after" in query:
            listed = [t for t in listed if str(t["id"]) > query["after"]]
        page = [
            {"orgID": "0a", "org": self.org, **t} for t in listed[: int(query.get("limit", 100))]
        ]
        body: dict[str, Any] = {"links": {"self": "/api/v2/tasks"}, "tasks": page}
        return Answer(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    # -- storage ---------------------------------------------------------------------------------

    def store(self, bucket: str, records: Iterable[Record]) -> None:
        """Keep points (as `to()` or a write would): a later value for the same series, field
        and time replaces the earlier one."""
        kept = {_identity(r): r for r in self.stored[bucket]}
        for record in records:
            row = {k: v for k, v in record.items() if k not in {"_start", "_stop"}}
            kept[_identity(row)] = row
        self.stored[bucket] = list(kept.values())

    def delete(self, bucket: str, start: str, stop: str, predicate: str) -> None:
        """`/api/v2/delete`: `[start, stop]` (inclusive), `key="value"` pairs joined by AND."""
        low, high = _rfc3339(start), _rfc3339(stop)
        wanted = {}
        for pair in predicate.split(" AND "):
            key, _, value = pair.partition("=")
            wanted[key.strip('"')] = value.strip('"')
        self.stored[bucket] = [
            r
            for r in self.stored[bucket]
            if not (low <= r["_time"] <= high and all(r.get(k) == v for k, v in wanted.items()))
        ]

    # -- running a script ------------------------------------------------------------------------

    def _run(self, script: str) -> Answer:
        if self.checker is None:
            raise CannotRunError("no Flux parser given")
        tree = self.checker.ast(script)
        results: list[tuple[str, list[Record]]] = []
        for statement in tree["body"]:
            if statement["type"] != "ExpressionStatement":
                raise CannotRunError(f"a {statement['type']}")
            name, rows = self._yielded(statement["expression"])
            results.append((name, rows))
        body = b"".join(_csv(name, rows) for name, rows in results)
        return Answer(200, body, {"Content-Type": "text/csv; charset=utf-8"})

    def _yielded(self, node: dict[str, Any]) -> tuple[str, list[Record]]:
        if node["type"] == "PipeExpression" and _callee(node["call"]) == "yield":
            return str(_arguments(node["call"])["name"]["value"]), self._table(node["argument"])
        return "_result", self._table(node)

    def _table(self, node: dict[str, Any]) -> list[Record]:
        """The rows a pipeline makes (each row carries its group key's columns)."""
        if node["type"] == "CallExpression":
            name, args = _callee(node), _arguments(node)
            if name == "from":
                return [dict(r) for r in self.stored.get(args["bucket"]["value"], [])]
            if name == "union":
                return [row for item in args["tables"]["elements"] for row in self._table(item)]
            raise CannotRunError(f"{name}() at the head of a pipeline")
        if node["type"] != "PipeExpression":
            raise CannotRunError(f"a {node['type']} as a table")
        rows = self._table(node["argument"])
        name, args = _callee(node["call"]), _arguments(node["call"])
        step = getattr(self, f"_step_{name}", None)
        if step is None:
            raise CannotRunError(f"{name}()")
        result: list[Record] = step(rows, args)
        return result

    def _step_range(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        low, high = _time(args["start"]), _time(args["stop"])
        return [{**r, "_start": low, "_stop": high} for r in rows if low <= r["_time"] < high]

    def _step_filter(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        function = args["fn"]
        (param,) = [p["key"]["name"] for p in function["params"]]
        return [r for r in rows if _evaluate(function["body"], {param: r}) is True]

    def _step_set(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        return [{**r, args["key"]["value"]: args["value"]["value"]} for r in rows]

    def _step_map(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        function = args["fn"]
        (param,) = [p["key"]["name"] for p in function["params"]]
        return [_evaluate(function["body"], {param: r}) for r in rows]

    def _step_to(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        if args.get("org", {}).get("value", self.org) != self.org:
            raise CannotRunError("to() another org")
        self.store(args["bucket"]["value"], rows)
        return rows

    def _step_keep(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        columns = [item["value"] for item in args["columns"]["elements"]]
        return [{k: r[k] for k in columns if k in r} for r in rows]

    def _step_group(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        # Only `group()`: every row into one table. Rows carry their group key's columns, so
        # the one table's key is what the rows share; `distinct` is the only step after it.
        if args:
            raise CannotRunError("group() with arguments")
        return [{**r, _UNGROUPED: True} for r in rows]

    def _step_distinct(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        if not all(r.get(_UNGROUPED) for r in rows):
            raise CannotRunError("distinct() but after group()")
        column = args["column"]["value"]
        return [{"_value": v} for v in dict.fromkeys(r[column] for r in rows if column in r)]

    def _step_aggregateWindow(self, rows: list[Record], args: dict[str, Any]) -> list[Record]:
        if _evaluate(args.get("createEmpty", {"type": "Identifier", "name": "true"}), {}):
            raise CannotRunError("aggregateWindow(createEmpty: true)")
        if args.get("timeSrc", {}).get("value") != "_start":
            raise CannotRunError('aggregateWindow without timeSrc: \\"_start\\"')
        every, offset = _duration(args["every"]), _duration(args.get("offset"))
        function = _aggregate(args["fn"])
        windows: dict[tuple[Any, ...], list[tuple[int, Any]]] = defaultdict(list)
        keys: dict[tuple[Any, ...], Record] = {}
        for row in sorted(rows, key=lambda r: r["_time"]):
            start = (row["_time"] - offset) // every * every + offset
            group = {k: v for k, v in row.items() if k not in {"_time", "_value"}}
            key = (*sorted(group.items()), start)
            keys[key] = {**group, "_time": max(start, row["_start"])}
            windows[key].append((row["_time"], row["_value"]))
        return [{**keys[key], "_value": function(values)} for key, values in windows.items()]


def _identity(record: Record) -> tuple[Any, ...]:
    return tuple(sorted((k, v) for k, v in record.items() if k != "_value"))


def _callee(call: dict[str, Any]) -> str:
    return str(call["callee"]["name"])


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    if not call.get("arguments"):  # `group()`: the parser leaves the key out
        return {}
    return {p["key"]["name"]: p["value"] for p in call["arguments"][0]["properties"]}


def _rfc3339(text: str) -> int:
    seconds, _, fraction = text.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(seconds + "+00:00")
    return round(whole.timestamp()) * NS + int((fraction + "000000000")[:9])


def _time(node: dict[str, Any]) -> int:
    if node["type"] == "IntegerLiteral":
        return int(node["value"]) * NS
    if node["type"] == "DateTimeLiteral":
        # The parser gives microseconds at most (`…00.500+00:00`); tierflow's bounds are whole
        # windows, so nothing finer is lost.
        moment = datetime.fromisoformat(node["value"])
        return round(moment.timestamp()) * NS + moment.microsecond * 1000
    raise CannotRunError(f"a {node['type']} as a time")


def _duration(node: dict[str, Any] | None) -> int:
    if node is None:
        return 0
    if node["type"] == "UnaryExpression" and node["operator"] == "-":
        return -_duration(node["argument"])
    if node["type"] != "DurationLiteral":
        raise CannotRunError(f"a {node['type']} as a duration")
    return sum(int(part["magnitude"]) * _UNITS[part["unit"]] for part in node["values"])


def _aggregate(node: dict[str, Any]) -> Callable[[list[tuple[int, Any]]], Any]:
    if node["type"] == "Identifier" and node["name"] in _AGGREGATES:
        return _AGGREGATES[node["name"]]
    raise CannotRunError(f"aggregateWindow(fn: {node.get('name', node['type'])})")


def _evaluate(node: dict[str, Any], scope: dict[str, Any]) -> Any:
    """A row-level expression: literals, `r.x` and `r["x"]`, comparisons, `and`/`or`, arithmetic
    and `{r with …}`."""
    kind = node["type"]
    if kind in {"StringLiteral", "FloatLiteral"}:
        return node["value"]
    if kind == "IntegerLiteral":
        return int(node["value"])
    if kind == "Identifier":
        if node["name"] in {"true", "false"}:
            return node["name"] == "true"
        return scope[node["name"]]
    if kind == "ParenExpression":
        return _evaluate(node["expression"], scope)
    if kind == "MemberExpression":
        row = _evaluate(node["object"], scope)
        key = node["property"].get("name", node["property"].get("value"))
        return row.get(key)
    if kind == "LogicalExpression":
        left = _evaluate(node["left"], scope)
        if node["operator"] == "and":
            return left is True and _evaluate(node["right"], scope) is True
        return left is True or _evaluate(node["right"], scope) is True
    if kind == "BinaryExpression":
        return _binary(node["operator"], _evaluate(node["left"], scope), node, scope)
    if kind == "ObjectExpression" and node.get("with"):
        row = dict(scope[node["with"]["name"]])
        for prop in node["properties"]:
            row[prop["key"]["name"]] = _evaluate(prop["value"], scope)
        return row
    raise CannotRunError(f"a {kind} in an expression")


def _binary(operator: str, left: Any, node: dict[str, Any], scope: dict[str, Any]) -> Any:
    right = _evaluate(node["right"], scope)
    if operator == "==":
        return left == right
    if operator == "!=":
        return left != right
    if left is None or right is None:
        return None
    if type(left) is not type(right):
        raise CannotRunError(f"{type(left).__name__} {operator} {type(right).__name__}")
    operations: dict[str, Callable[[Any, Any], Any]] = {
        "*": lambda a, b: a * b,
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
    }
    if operator not in operations:
        raise CannotRunError(f"the operator {operator}")
    return operations[operator](left, right)


def _csv(name: str, rows: list[Record]) -> bytes:
    """The rows as annotated CSV, one table per group key (every column but `_time` and
    `_value`), as 2.x answers them."""
    tables: dict[tuple[Any, ...], list[Record]] = defaultdict(list)
    for row in rows:
        tables[
            tuple(sorted((k, v) for k, v in row.items() if k not in {"_time", "_value"}))
        ].append(row)
    if not tables:
        return b""
    blocks = []
    groups = []
    for key, members in tables.items():
        names = [k for k, _ in key]
        # After `distinct`, rows hold `_value` only (no time, no group key).
        columns = ["_time", "_value", *names] if "_time" in members[0] else ["_value", *names]
        kind = _KINDS[type(members[0]["_value"])]
        datatypes = [_datatype(c) if c != "_value" else kind for c in columns]
        blocks.append(
            (columns, datatypes, [[_cell(c, r.get(c)) for c in columns] for r in members])
        )
        groups.append(names)
    return annotated_csv(blocks, group_key=groups).replace(b"_result", name.encode())


def _datatype(column: str) -> str:
    return "dateTime:RFC3339Nano" if column in {"_time", "_start", "_stop"} else "string"


def _cell(column: str, value: Any) -> str:
    if column in {"_time", "_start", "_stop"}:
        return rfc3339_nano(int(value))
    return "" if value is None else cell(value)


def points_of(
    records: Iterable[Record],
) -> Iterator[tuple[str, int, frozenset[tuple[str, str]], str, Any]]:
    """(measurement, time, tags, field, value) of stored records."""
    for r in records:
        tags = frozenset(
            (k, v) for k, v in r.items() if not k.startswith("_") and isinstance(v, str) and v != ""
        )
        yield r["_measurement"], r["_time"], tags, r["_field"], r["_value"]
