"""One InfluxDB 2.x task → one tierflow job doing its work, or a job left commented out, saying
why. Pure: no I/O. The script is read with the Flux tokenizer of tierflow's 2.x engine.

A task runs its script at each tick of `option task = {every | cron, offset}`; `offset` delays the
run, not the data (`now()` is the tick), so `range(start: -task.every)` reads the span between
two ticks: tierflow's window, and `offset` keeps its meaning (a window runs `offset` after it ends).
(InfluxData's "Task configuration options": `every: 1h` saved at 2:30 first runs at 3:00; `offset`
"delays the execution of the task but preserves the original time range".)

A task becomes a `downsample` job only when tierflow's own Flux writes the same points:
`from |> range |> filter(_measurement, tags, _field) |> aggregateWindow(every: <the window>, fn,
createEmpty: false, timeSrc: "_start") |> set(key: "_field", value: "<field>_<fn>") |> to()`.
The bare downsampling shape (`… |> aggregateWindow(every: 1h, fn: mean) |> to()`) keeps the
field's name and stamps points at the window's stop (and with `createEmpty` true writes empty
windows' counts), which tierflow's downsample does not do: such a task becomes a `query` job,
whose template is the task's own Flux with every `range()` bound to the window and the task
option's values written in. Anything whose meaning would change is refused: ranges that are not
one run's span, `now()` elsewhere, `to()` by ID or into another org, calendar durations.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tierflow._durations import format_duration
from tierflow._engines.flux._literals import FLUX_AGGREGATES
from tierflow._engines.flux._syntax import (
    Call,
    Kind,
    Token,
    _split_commas,
    calls,
    statements,
    tokenize,
)
from tierflow._errors import FluxSyntaxError
from tierflow._importing._translation import Translation
from tierflow._windows import CronSchedule

__all__ = ["ImportedTask", "translate_task"]

_BOUNDS = "start: {{ window.start | flux_time }}, stop: {{ window.stop | flux_time }}"
_UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
}
# Aggregates whose Flux function is the one tierflow's downsample template calls by that name.
_SAME_AGGREGATES = frozenset(name for name, flux in FLUX_AGGREGATES.items() if name == flux)
_SAMPLE_WINDOWS = 400


@dataclass(slots=True)
class ImportedTask(Translation[str]):
    """A task's translation (tiers by bucket name)."""

    name: str
    task_id: str
    flux: str


class _Refused(Exception):
    pass


def translate_task(task: dict[str, Any], org: str, start: datetime) -> ImportedTask:
    """The job doing `task`'s work (`task` as `GET /api/v2/tasks` lists it) in `org`."""
    job = ImportedTask(str(task.get("name", "")), str(task.get("id", "")), str(task.get("flux")))
    if task.get("status") == "inactive":
        job.notes.append("the task is inactive on the server")
    try:
        _translate(job, org, start)
    except _Refused as exc:
        job.refused.append(str(exc))
    except FluxSyntaxError as exc:
        job.refused.append(f"its Flux could not be read: {exc}")
    return job


def _translate(job: ImportedTask, org: str, start: datetime) -> None:
    tokens = tokenize(job.flux)
    option, values = _task_option(tokens)
    schedule, span = _schedule(values)
    found = calls(tokens)
    job.source = _only_bucket(found, "from", org, "reads")
    job.dest = _only_bucket(found, "to", org, "writes")
    ranges = _range_splices(tokens, values, span)
    for token, following in itertools.pairwise(tokens):
        inside = any(start <= token.start < end for start, end, _ in ranges)
        if token.text == "now" and following.text == "(" and not inside:
            raise _Refused(
                f"line {token.line}: now() is the scheduled time in a task and the moment the "
                "query runs in tierflow; bound the script by range() instead"
            )
    splices = [(option[0].start, _end(option[-1]), ""), *ranges]
    splices += _option_references(tokens, values)
    job.keys = {"kind": "", "source": None, "dest": None, **schedule, "start": start}
    if "offset" in values:
        job.keys["offset"] = format_duration(_duration(values["offset"]))
    downsample = _downsample_keys(tokens, found, values, span)
    if downsample is not None:
        job.kind = "downsample"
        job.keys.update(downsample)
    else:
        job.kind = "query"
        job.keys["template"] = None
        job.template = _raw(_spliced(job.flux, splices), job)
        if _is_downsample_shape(found):
            job.notes.append(
                "the downsampling shape, kept as a query job: tierflow's downsample job names "
                "its output <field>_<fn>, stamps it at the window start and skips empty windows "
                '(aggregateWindow(…, createEmpty: false, timeSrc: "_start") |> set(key: '
                '"_field", …)); this task writes what its own Flux says'
            )
    job.keys["kind"] = job.kind


def _task_option(tokens: Sequence[Token]) -> tuple[list[Token], dict[str, list[Token]]]:
    for statement in statements(tokens):
        if (
            len(statement) > 4
            and statement[0].text == "option"
            and statement[1].text == "task"
            and statement[2].text == "="
            and statement[3].text == "{"
            and statement[-1].text == "}"
        ):
            values: dict[str, list[Token]] = {}
            for part in _split(statement[4:-1]):
                if len(part) < 3 or part[1].text != ":":
                    raise _Refused("option task is not a record of name: value pairs")
                values[part[0].text] = list(part[2:])
            return statement, values
    raise _Refused("no `option task = {…}` in its Flux")


def _split(items: Sequence[Token]) -> list[list[Token]]:
    return _split_commas([token for token in items if token.kind is not Kind.NEWLINE])


def _duration(value: Sequence[Token]) -> timedelta:
    if len(value) != 1 or value[0].kind is not Kind.DURATION:
        raise _Refused(f"{''.join(t.text for t in value)} is not a duration literal")
    text, total = value[0].text, timedelta(0)
    for count, unit in re.findall(r"(\d+)(mo|ms|us|µs|ns|y|w|d|h|m|s)", text):
        if unit in {"mo", "y"}:
            raise _Refused(f"{text}: months and years are calendar lengths, tierflow's are fixed")
        if unit == "ns":
            raise _Refused(f"{text}: tierflow's windows are whole seconds")
        total += int(count) * _UNITS[unit]
    return total


def _schedule(values: dict[str, list[Token]]) -> tuple[dict[str, str], timedelta]:
    """The job's `every` or `cron`, and the span between two runs."""
    if "every" in values:
        every = _duration(values["every"])
        if every <= timedelta(0) or every % timedelta(seconds=1):
            raise _Refused(f"every: {format_duration(every)}: windows are whole seconds")
        return {"every": format_duration(every)}, every
    cron_value = values.get("cron")
    if not cron_value or len(cron_value) != 1 or cron_value[0].value is None:
        raise _Refused("option task has neither every nor a cron string")
    cron = cron_value[0].value
    try:
        schedule = CronSchedule(cron)
    except ValueError as exc:
        raise _Refused(f"cron {cron!r}: {exc}") from None
    window = schedule.window_at(datetime(2026, 1, 1, tzinfo=UTC))
    spans = set()
    for _ in range(_SAMPLE_WINDOWS):
        spans.add(window.length)
        window = schedule.next_window(window)
    if len(spans) != 1:
        raise _Refused(
            f"cron {cron!r} ticks at uneven intervals, so `range(start: -…)` (one fixed span) "
            "is not the span between two runs"
        )
    return {"cron": cron}, spans.pop()


def _only_bucket(found: Iterable[Call], name: str, org: str, verb: str) -> str:
    buckets: set[str] = set()
    for call in found:
        if call.name != name:
            continue
        if call.opaque or "bucketID" in call.args or "bucket" not in call.args:
            raise _Refused(f"line {call.line}: {name}() {verb} a bucket not named by bucket:")
        value = call.args["bucket"]
        if len(value) != 1 or value[0].value is None:
            raise _Refused(f"line {call.line}: {name}(bucket:) is not a string literal")
        for key in ("org", "orgID", "host", "token"):
            if key in call.args and not (
                key == "org" and len(call.args[key]) == 1 and call.args[key][0].value == org
            ):
                raise _Refused(f"line {call.line}: {name}() {verb} outside the org {org!r}")
        buckets.add(value[0].value)
    if len(buckets) != 1:
        shown = ", ".join(sorted(buckets)) or "none"
        raise _Refused(f"it {verb} {len(buckets)} buckets ({shown}); a job has one {verb[:-1]}")
    return buckets.pop()


def _end(token: Token) -> int:
    return token.start + len(token.text)


def _range_splices(
    tokens: Sequence[Token], values: dict[str, list[Token]], span: timedelta
) -> list[tuple[int, int, str]]:
    """Every `range(start: -<the span>[, stop: now()])` with its arguments made the window's."""
    items = [t for t in tokens if t.kind is not Kind.NEWLINE]
    splices = []
    for index, token in enumerate(items):
        if not (token.text == "range" and index + 1 < len(items) and items[index + 1].text == "("):
            continue
        close = _matching(items, index + 1)
        args = {part[0].text: part[2:] for part in _split(items[index + 2 : close])}
        start = args.get("start", [])
        stop = args.get("stop")
        relative = len(start) >= 2 and start[0].text == "-"
        spans = relative and _span_of(start[1:], values) == span
        if not spans or (stop is not None and [t.text for t in stop] != ["now", "(", ")"]):
            shown = "".join(t.text for t in items[index : close + 1])
            raise _Refused(
                f"line {token.line}: {shown} is not the span between two runs "
                f"(range(start: -{format_duration(span)})), so the job's windows would not "
                "read what the task's runs read"
            )
        splices.append((items[index + 1].start + 1, items[close].start, _BOUNDS))
    if not splices:
        raise _Refused("no range(): the task reads no bounded span")
    return splices


def _span_of(value: Sequence[Token], values: dict[str, list[Token]]) -> timedelta | None:
    if [t.text for t in value] == ["task", ".", "every"] and "every" in values:
        return _duration(values["every"])
    try:
        return _duration(value)
    except _Refused:
        return None


def _matching(items: Sequence[Token], open_index: int) -> int:
    depth = 0
    for index in range(open_index, len(items)):
        text = items[index].text
        if items[index].kind is Kind.OP and text in "([{":
            depth += 1
        elif items[index].kind is Kind.OP and text in ")]}":
            depth -= 1
            if depth == 0:
                return index
    raise _Refused("unbalanced parentheses")


def _option_references(
    tokens: Sequence[Token], values: dict[str, list[Token]]
) -> list[tuple[int, int, str]]:
    """`task.every` and friends outside range(): the option's value written in (the option
    statement itself is not carried into a query)."""
    items = [t for t in tokens if t.kind is not Kind.NEWLINE]
    splices = []
    for index in range(len(items) - 2):
        a, dot, key = items[index : index + 3]
        if a.text != "task" or dot.text != "." or key.kind is not Kind.IDENT:
            continue
        if key.text not in values:
            raise _Refused(f"line {a.line}: task.{key.text} is not set in option task")
        literal = " ".join(t.text for t in values[key.text])
        splices.append((a.start, _end(key), literal))
    return splices


def _spliced(text: str, splices: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, replacement in sorted(splices):
        if start < pos:
            continue  # inside a span already replaced (a task.every inside a range)
        out += [text[pos:start], replacement]
        pos = end
    out.append(text[pos:])
    return "".join(out).strip() + "\n"


def _raw(text: str, job: ImportedTask) -> str:
    """The script as template text: Jinja2 syntax in it (not ours) is kept literal."""
    pieces = text.split(_BOUNDS)
    if not any(mark in piece for piece in pieces for mark in ("{{", "{%", "{#")):
        return text
    if "endraw" in text:
        job.refused.append("its Flux holds 'endraw', which a template cannot keep literal")
    return _BOUNDS.join("{% raw %}" + piece + "{% endraw %}" for piece in pieces)


def _is_downsample_shape(found: Sequence[Call]) -> bool:
    names = [c.name for c in found if c.name not in {"r", "fn"}]
    return {"from", "range", "filter", "aggregateWindow", "to"} <= set(names)


def _downsample_keys(
    tokens: Sequence[Token],
    found: Sequence[Call],
    values: dict[str, list[Token]],
    span: timedelta,
) -> dict[str, Any] | None:
    """The downsample job's keys when the script is exactly what tierflow's downsample renders
    (see the module docstring), else None."""
    body = [s for s in statements(tokens) if s[0].text not in {"option", "import"}]
    names = [c.name for c in found]
    if len(body) != 1 or names != ["from", "range", "filter", "aggregateWindow", "set", "to"]:
        return None
    window, rename = found[3], found[4]
    if window.opaque or set(window.args) - {"every", "fn", "createEmpty", "timeSrc", "offset"}:
        return None
    text = {key: "".join(t.text for t in value) for key, value in window.args.items()}
    if text.get("createEmpty") != "false" or text.get("timeSrc") != '"_start"':
        return None
    if _span_of(window.args.get("every", ()), values) != span or "offset" in window.args:
        return None
    function = text.get("fn", "")
    filters = _filter(found[2])
    if filters is None or function not in _SAME_AGGREGATES:
        return None
    measurement, field_name, tags = filters
    alias = f"{field_name}_{function}"
    key, value = rename.args.get("key", ()), rename.args.get("value", ())
    if [t.value for t in key] != ["_field"] or [t.value for t in value] != [alias]:
        return None
    keys: dict[str, Any] = {"measurements": [measurement]}
    if tags:
        keys["tags"] = tags
    keys["aggregates"] = {field_name: [function]}
    return keys


def _filter(call: Call) -> tuple[str, str, dict[str, str]] | None:
    """`filter(fn: (r) => r._measurement == "m" and r.tag == "v" … and r._field == "f")`."""
    fn = [t for t in call.args.get("fn", ()) if t.kind is not Kind.NEWLINE]
    if call.opaque or [t.text for t in fn[:4]] != ["(", "r", ")", "=>"]:
        return None
    found: dict[str, str] = {}
    rest = fn[4:]
    while rest:
        if rest[0].text != "r":
            return None
        if len(rest) >= 5 and rest[1].text == "." and rest[3].text == "==":
            name, value, rest = rest[2].text, rest[4], rest[5:]
        elif len(rest) >= 6 and rest[1].text == "[" and rest[3].text == "]":
            if rest[2].value is None or rest[4].text != "==":
                return None
            name, value, rest = rest[2].value, rest[5], rest[6:]
        else:
            return None
        if value.value is None or name in found:
            return None
        found[name] = value.value
        if rest:
            if rest[0].text != "and":
                return None
            rest = rest[1:]
    measurement, field_name = found.pop("_measurement", None), found.pop("_field", None)
    if measurement is None or field_name is None or any(k.startswith("_") for k in found):
        return None
    return measurement, field_name, found
