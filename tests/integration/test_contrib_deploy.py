"""contrib/systemd and contrib/kubernetes: the unit passes `systemd-analyze verify`, the YAML
parses, every tierflow command line in them is one the real CLI accepts, the probes ask paths
the daemon serves, and the ConfigMap's config passes `tierflow validate`.

No server is needed: the probe paths are asked of a real `tierflow run` with no jobs due."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._support import (
    TIERFLOW,
    add_tables,
    free_port,
    http_get,
    processes,
    spawn,
    wait_http,
)
from tests.integration.conftest import ConfigWriter

CONTRIB = Path(__file__).parents[2] / "contrib"
UNIT = CONTRIB / "systemd" / "tierflow.service"
INSTALLED = "/opt/tierflow/bin/tierflow"


def unit_lines(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"{key}=")
    ]


def manifests(name: str) -> list[dict[str, Any]]:
    with (CONTRIB / "kubernetes" / name).open(encoding="utf-8") as text:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec["containers"]


def accepts(argv: list[str]) -> None:
    """`tierflow ARGS… --help` exits 0: the command exists and every option parses."""
    assert argv[0].endswith("tierflow"), argv
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    done = subprocess.run(
        [str(TIERFLOW), *argv[1:], "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
    assert done.stdout.startswith("Usage: tierflow "), done.stdout


def test_the_systemd_unit_verifies_and_its_commands_parse(tmp_path: Path) -> None:
    assert unit_lines("Type") == ["exec"]  # no sd_notify: not Type=notify
    assert unit_lines("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert unit_lines("Restart") == ["on-failure"]
    assert unit_lines("NoNewPrivileges") == ["yes"]
    assert unit_lines("ProtectSystem") == ["strict"]
    assert unit_lines("ReadWritePaths") == ["/var/lib/tierflow"]
    commands = [shlex.split(line) for line in unit_lines("ExecStartPre") + unit_lines("ExecStart")]
    assert [argv[1] for argv in commands] == ["validate", "run"]
    for argv in commands:
        assert argv[0] == INSTALLED
        accepts(argv)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's commands parse, not verified")
    # verify wants the commands to exist: the same unit, with this install's tierflow.
    local = tmp_path / "tierflow.service"
    local.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, str(TIERFLOW)))
    done = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    # An unknown key is only a warning (exit 0): any output at all fails.
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stderr


def test_the_kubernetes_manifests_parse_and_their_commands_are_real() -> None:
    deployment_docs, cronjob_docs = manifests("deployment.yaml"), manifests("cronjob.yaml")
    deployment = of_kind(deployment_docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (daemon,) = containers(pod)
    assert daemon["args"][:2] == ["tierflow", "run"]
    accepts(daemon["args"])
    # SQLite state on a claim: one replica, replaced not rolled.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {of_kind(deployment_docs, "PersistentVolumeClaim")["metadata"]["name"]}
    # Both tokens (InfluxDB's, the status API's and /metrics') from the Secret, never written here.
    assert {e["name"] for e in daemon["env"]} == {"INFLUX_TOKEN", "TIERFLOW_SERVER_TOKEN"}
    for token in daemon["env"]:
        assert token["valueFrom"]["secretKeyRef"]["name"] == "tierflow"
        assert "value" not in token

    cronjob = of_kind(cronjob_docs, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (once,) = containers(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    assert once["args"][:2] == ["tierflow", "run-once"]
    accepts(once["args"])


def test_the_configmap_config_validates_and_the_probes_are_served(
    tmp_path: Path, db: str, write_config: ConfigWriter
) -> None:
    deployment_docs = manifests("deployment.yaml")
    text = of_kind(deployment_docs, "ConfigMap")["data"]["tierflow.toml"]
    (daemon,) = containers(of_kind(deployment_docs, "Deployment")["spec"]["template"]["spec"])
    mount = next(m["mountPath"] for m in daemon["volumeMounts"] if m["name"] == "config")
    assert daemon["args"][daemon["args"].index("--config") + 1] == f"{mount}/tierflow.toml"
    config = tmp_path / "k8s" / "tierflow.toml"
    config.parent.mkdir()
    config.write_text(
        text.replace("sqlite:////var/lib/tierflow/", f"sqlite:///{tmp_path}/"), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    done = subprocess.run(
        [str(TIERFLOW), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env | {"INFLUX_TOKEN": "t0ken"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listen = re.search(r'listen = "0\.0\.0\.0:(\d+)"', text)
    assert listen is not None
    assert daemon["ports"][0]["containerPort"] == int(listen[1])

    # The probes' paths, asked of a real daemon (no window due: nothing is run).
    port = free_port()
    later = datetime.now(UTC) + timedelta(days=1)
    local = add_tables(
        write_config(
            db,
            {
                "idle": {
                    "measurements": ["sensor"],
                    "every": "5m",
                    "start": later,
                    "aggregates": {"temp": ["mean"]},
                }
            },
        ),
        {"server": {"listen": f"127.0.0.1:{port}"}},
    )
    probes = {
        probe: daemon[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")
    }
    assert probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    with processes() as spawned:
        running = spawn("run", "-c", local)
        spawned.append(running)
        assert wait_http(f"http://127.0.0.1:{port}/healthz", 15, running)[0] == 200
        # Ready once the first beat reached the state store: a moment after it is alive, as
        # the kubelet's repeated probe allows.
        deadline, ready = time.monotonic() + 15, 0
        while ready != 200 and time.monotonic() < deadline:
            ready = http_get(f"http://127.0.0.1:{port}{probes['readinessProbe']}")[0]
            time.sleep(0.1)
        answers = {p: http_get(f"http://127.0.0.1:{port}{path}")[0] for p, path in probes.items()}
        running.stop(signal.SIGTERM)
    assert answers == {"livenessProbe": 200, "readinessProbe": 200}
