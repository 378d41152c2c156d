"""contrib/: the alerting rules and the Grafana dashboard, against the real Prometheus tools.

`promtool check rules` and `promtool test rules` run the rules' own unit tests. Then a real
Prometheus (Debian's `prometheus`, a throwaway process on its own loopback port and storage
directory, never the service the package may have started) scrapes a live `tierflow run` on a real
influxd with the shipped scrape config and rules loaded: every PromQL expression of every
dashboard panel, its template variables given the values Prometheus itself lists for them, must
return data through the HTTP API, and every rule must be healthy. One job runs on the influxd,
another on a connection nobody answers, so that retries, an open circuit, a failed readiness check
and a lagging job are real, and the rules about them must go pending on what tierflow exports.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._helpers import job
from tests.integration._support import (
    add_tables,
    floor_to,
    free_port,
    http_get,
    processes,
    spawn,
    wait_http,
)
from tests.integration.conftest import ConfigWriter
from tierflow.testing import ThrowawayInfluxd

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "tierflow-rules.yml"
RULES_TESTS = CONTRIB / "prometheus" / "tierflow-rules.test.yml"
SCRAPE_CONFIG = CONTRIB / "prometheus" / "prometheus.yml"
DASHBOARD = CONTRIB / "grafana" / "tierflow.json"
# What Grafana puts in for `$__rate_interval` at its default 15 s scrape interval (4 × 15 s).
RATE_INTERVAL = "1m"


def tool(name: str) -> str:
    """A Prometheus binary from Debian's `prometheus` package; missing, the test fails."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus (scripts/bootstrap)")
    return path


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules_and_each_alert_has_a_unit_test_that_fires_it() -> None:
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in checked.stdout, checked.stdout

    # `promtool test rules` resolves rule_files from the test file's directory.
    tested = subprocess.run(
        [tool("promtool"), "test", "rules", RULES_TESTS.name],
        capture_output=True,
        text=True,
        cwd=RULES_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout, tested.stdout

    cases = [
        case
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    # Each alert is shown to fire, and shown not to fire before its time or for the healthy.
    assert fired == quiet == set(alert_names())


def test_promtool_accepts_the_example_scrape_config_with_its_rules() -> None:
    checked = subprocess.run(
        [tool("promtool"), "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout, checked.stdout
    (scrape,) = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    assert scrape["job_name"] == "tierflow"  # what TierflowDown and the dashboard look for
    assert "honor_labels" not in scrape  # tierflow's `job` label arrives as `exported_job`


def test_every_panel_reads_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": f"${{{source['name']}}}"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted, panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == wanted, variable["name"]


# -- a live daemon scraped by a real Prometheus ------------------------------------------------


class Prometheus:
    """A throwaway Prometheus on its own loopback port and storage directory."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        checked = subprocess.run(
            [tool("promtool"), "check", "config", str(self.config)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if http_get(f"{self.url}/-/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Prometheus did not get ready:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, text = http_get(f"{self.url}/api/v1/{path}?{query}")
        body = json.loads(text)
        assert status == 200, f"{path} {params}: {text}"
        assert body["status"] == "success", f"{path} {params}: {text}"
        assert not body.get("warnings"), f"{path} {params}: {body['warnings']}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(item["value"][1]) for item in result]


def value(prometheus: Prometheus, expr: str) -> float:
    found = values(prometheus.query(expr))
    assert len(found) == 1, (expr, found)
    return found[0]


def until(condition: Callable[[], str | None], timeout: float) -> None:
    """Call `condition` until it returns None (met); after `timeout`, fail with what it said."""
    deadline = time.monotonic() + timeout
    while (unmet := condition()) is not None:
        assert time.monotonic() < deadline, unmet
        time.sleep(0.5)


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def substitute(expr: str, variables: dict[str, str]) -> str:
    def value_of(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"{expr}: unknown variable ${name}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value_of, expr)


def label_values(prometheus: Prometheus, definition: str, variables: dict[str, str]) -> set[str]:
    """Grafana's `label_values(selector, label)` through Prometheus' own label API."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    assert match, definition
    selector = substitute(match.group(1), variables)
    return set(prometheus.api(f"label/{match.group(2)}/values", **{"match[]": selector}))


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return directory


def test_a_real_prometheus_scraping_a_live_daemon_answers_every_panel_and_loads_the_rules(
    influxd: ThrowawayInfluxd, db: str, write_config: ConfigWriter, prometheus_dir: Path
) -> None:
    every = timedelta(seconds=2)
    now = datetime.now(UTC)
    start = floor_to(now - 10 * every, every)
    influxd.write(
        [
            f"sensor,host=h{i % 3} temp={i}.5 {int((now - i * every / 2).timestamp() * 1e9)}"
            for i in range(20)
        ],
        db=db,
    )
    port, nobody = free_port(), free_port()
    config = add_tables(
        write_config(db, {"live": job(start, every="2s", offset="500ms")}),
        {
            "scheduler": {"grace": "5s"},
            "server": {"listen": f"127.0.0.1:{port}"},
            # Nobody listens there: calls are retried, then the circuit opens and stays open.
            "connections.gone": {
                "kind": "influxdb1",
                "url": f"http://127.0.0.1:{nobody}",
                "retry": {"attempts": 3, "initial": "50ms", "max": "100ms", "deadline": "2s"},
                "circuit": {"failures": 2, "cooldown": "1h"},
            },
            "tiers.gone_hot": {"connection": "gone", "bucket": f"{db}/autogen"},
            "tiers.gone_warm": {"connection": "gone", "bucket": f"{db}/warm"},
            "jobs.stalled": {
                **job(start, every="2s"),
                "kind": "downsample",
                "source": "gone_hot",
                "dest": "gone_warm",
            },
        },
    )
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    scrape["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    scrape["rule_files"] = [str(RULES)]
    (target,) = scrape["scrape_configs"]
    target["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    prometheus = Prometheus(prometheus_dir, scrape)

    with processes() as spawned:
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        assert wait_http(f"http://127.0.0.1:{port}/healthz", timeout=15, process=daemon)[0] == 200
        try:
            prometheus.start()
            check_live(prometheus, port)
            # And once the daemon is gone, TierflowDown goes pending for it.
            code, _ = daemon.stop(signal.SIGTERM)
            assert code == 0, daemon.describe()
            until(lambda: alerts_pending(prometheus, {("TierflowDown", None)}), timeout=15)
        finally:
            prometheus.stop()


def check_live(prometheus: Prometheus, port: int) -> None:
    instance = f"127.0.0.1:{port}"
    dashboard = json.loads(DASHBOARD.read_text())

    # What tierflow did, as Prometheus scraped it: the live job succeeds, the other job's calls
    # were retried until its circuit opened, and the readiness check says the connection is gone.
    def scraped() -> str | None:
        needed = {
            "live succeeded": 'tierflow_window_runs_total{exported_job="live",status="succeeded"}',
            "gone retried": 'tierflow_query_retries_total{connection="gone"}',
            "gone circuit": 'tierflow_circuit_state{connection="gone"}',
        }
        got = {what: values(prometheus.query(expr)) for what, expr in needed.items()}
        if any(not found or found[0] <= 0 for found in got.values()):
            return f"not scraped yet: {got}"
        return None

    until(scraped, timeout=30)
    assert value(prometheus, f'up{{job="tierflow", instance="{instance}"}}') == 1
    assert value(prometheus, "tierflow_ready") == 0
    assert value(prometheus, 'tierflow_circuit_state{connection="gone"}') == 1
    assert value(prometheus, 'tierflow_circuit_state{connection="plant"}') == 0
    assert value(prometheus, 'tierflow_query_retries_total{connection="plant"}') == 0

    # The template variables, as Grafana would list them; then each set to "All" (its allValue).
    variables = {"instance": ".+", "job": ".+", "connection": ".+"}
    expected = {"instance": {instance}, "job": {"live", "stalled"}, "connection": {"plant", "gone"}}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "datasource":
            assert variable["query"] == "prometheus"
            continue
        listed = label_values(prometheus, variable["definition"], variables)
        assert listed == expected[variable["name"]], variable["definition"]
        assert variable["allValue"] == variables[variable["name"]]
    variables["__rate_interval"] = RATE_INTERVAL
    variables["datasource"] = "prometheus"

    queries = [(title, substitute(expr, variables)) for title, expr in panel_queries(dashboard)]
    assert len(queries) >= 15
    answers: dict[tuple[str, str], list[float]] = {}

    def every_panel_answers() -> str | None:
        for title, expr in queries:
            answers[title, expr] = values(prometheus.query(expr))
        empty = [key for key, found in answers.items() if not any(map(math.isfinite, found))]
        return f"no finite value for: {empty}" if empty else None

    until(every_panel_answers, timeout=20)

    # The rules: all loaded, evaluated and healthy; those about the gone connection pending.
    def rules_evaluated() -> str | None:
        (group,) = prometheus.api("rules")["groups"]
        rules = group["rules"]
        assert [r["name"] for r in rules] == alert_names()
        for rule in rules:
            assert rule["health"] in {"ok", "unknown"}, rule
            assert not rule.get("lastError"), rule
        unevaluated = [r["name"] for r in rules if r["health"] != "ok"]
        return f"not evaluated yet: {unevaluated}" if unevaluated else None

    until(rules_evaluated, timeout=10)

    # Every metric a rule reads is one the daemon exports (or Prometheus' own `up`).
    for name in sorted(set(re.findall(r"\b(?:tierflow_\w+|up)\b", rules_text()))):
        assert prometheus.query(f'count({{__name__="{name}"}})'), f"no series {name}"

    # What the gone connection makes true (and only that) sends its rules pending.
    wanted = {
        ("TierflowCircuitOpen", "gone"),
        ("TierflowNotReady", None),
        ("TierflowWatermarkLagging", "stalled"),
    }
    until(lambda: alerts_pending(prometheus, wanted, exactly=True), timeout=10)


def rules_text() -> str:
    return "\n".join(
        rule["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    )


def alerts_pending(
    prometheus: Prometheus, wanted: set[tuple[str, str | None]], *, exactly: bool = False
) -> str | None:
    """None once the alerts (name, connection or tierflow job) in `wanted` are pending (and, if
    `exactly`, no others are pending or firing)."""
    alerts = {
        (
            a["labels"]["alertname"],
            a["labels"].get("connection") or a["labels"].get("exported_job"),
            a["state"],
        )
        for a in prometheus.api("alerts")["alerts"]
    }
    pending = {(name, about) for name, about, state in alerts if state == "pending"}
    met = pending == wanted == {(n, a) for n, a, _ in alerts} if exactly else wanted <= pending
    return None if met else f"alerts {sorted(alerts, key=str)}, wanted pending: {wanted}"
