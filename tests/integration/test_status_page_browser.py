"""The status page in a real browser: headless Chromium (Debian's `chromium`, driven over the
DevTools protocol) loads `/` from a live `tierflow run` on a real influxd, behind a bearer token,
and the test reads what a person sees from the DOM.

One job downsamples for real; the other writes into a database that does not exist, so the
server refuses its windows (the oracle for "failed": influxd's own error, and the state file
read with sqlite3, not through tierflow), and reads a tier said to keep 3 hours, so its oldest
failed windows are at risk. A screenshot is kept under `test-artifacts/` (docs/status-page.png
is one of them).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration._chromium import Chromium, Page
from tests.integration._helpers import job, ns
from tests.integration._support import (
    add_tables,
    floor_to,
    free_port,
    http_get,
    processes,
    read_state,
    spawn,
    wait_http,
)
from tests.integration.conftest import ConfigWriter
from tierflow.testing import ThrowawayInfluxd

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "status-page-test-token-7f3a9c"
TOKEN_ENV = "STATUS_PAGE_TEST_TOKEN"  # spawn() passes every variable but TIERFLOW_* ones
EVERY = timedelta(minutes=10)


def get_json(url: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def browser() -> Iterator[Chromium]:
    chromium = Chromium().start()
    try:
        yield chromium
    finally:
        chromium.stop()


# Shown as a person sees it: laid out, not merely present in the DOM.
FORM = "document.getElementById('token-form')"
FORM_SHOWN = f"{FORM} && getComputedStyle({FORM}).display !== 'none'"

# What a person sees, read from the DOM.
SEEN = """(() => {
  const text = (node) => node ? node.textContent.trim() : null;
  return {
    jobs: [...document.querySelectorAll("article.job")].map((card) => ({
      name: text(card.querySelector("h3 .name")),
      windows: [...card.querySelectorAll(".strip li")].map((li) => ({
        start: li.dataset.start, state: li.dataset.state, title: li.title,
        at_risk: li.dataset.atRisk === "true",
        hidden_text: text(li.querySelector(".sr-only")),
        colour: getComputedStyle(li).backgroundColor,
      })),
      errors: [...card.querySelectorAll(".errors li")].map(text),
      facts: Object.fromEntries([...card.querySelectorAll("dl.facts div")].map(
        (d) => [text(d.querySelector("dt")), text(d.querySelector("dd"))])),
    })),
    connections: [...document.querySelectorAll("tr[data-connection]")].map(
      (tr) => [...tr.querySelectorAll("td")].map(text)),
    problem: (($) => $.hidden ? null : text($))(document.getElementById("problem")),
    form_shown: getComputedStyle(document.getElementById("token-form")).display !== "none",
    html: document.documentElement.outerHTML,
    now: document.body.dataset.rendered,
    href: location.href,
    stored: sessionStorage.getItem("tierflow-token"),
  };
})()"""


async def test_a_person_sees_the_jobs_and_the_failed_windows_in_chromium(
    influxd: ThrowawayInfluxd,
    db: str,
    write_config: ConfigWriter,
    browser: Chromium,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    start = floor_to(now - 4 * timedelta(hours=1), EVERY)
    influxd.write(
        [
            f"sensor,host=h{i % 3} temp={i}.5,errors={i % 4}i {ns(start + i * EVERY / 3)}"
            for i in range(3 * 24)
        ],
        db=db,
    )
    missing = f"{db}_missing"
    port = free_port()
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = add_tables(
        write_config(db, {"sensor_10m": job(start, every="10m")}),
        {
            # A failed window waits an hour before it is retried: it stays failed meanwhile.
            "scheduler": {"grace": "5s", "retry_delay": "1h", "max_retry_delay": "1h"},
            "server": {"listen": f"127.0.0.1:{port}", "token": {"env": TOKEN_ENV}},
            "tiers.lost": {"connection": "plant", "bucket": f"{missing}/autogen"},
            # The same data, said to be kept 3 h: a window waiting whose data is older than
            # now - 3 h + 1 h (the margin: a tenth, at least an hour) is at risk.
            "tiers.hot_3h": {"connection": "plant", "bucket": f"{db}/autogen", "retention": "3h"},
            "jobs.sensor_lost": {
                **job(start + timedelta(hours=1), every="10m"),
                "kind": "downsample",
                "source": "hot_3h",
                "dest": "lost",
            },
        },
    )
    url = f"http://127.0.0.1:{port}"
    with processes() as spawned:
        daemon = spawn("run", "-c", config)
        spawned.append(daemon)
        assert wait_http(f"{url}/healthz", timeout=20, process=daemon)[0] == 200

        # Without the token: the probes answer, the data does not.
        # (Ready or not: a daemon busy catching up may take longer than the check allows.)
        code, body = http_get(f"{url}/readyz")
        assert code in {200, 503}
        assert "ready" in json.loads(body)
        assert http_get(f"{url}/metrics")[0] == 401
        assert get_json(f"{url}/api/status", None) == (401, {"error": "a bearer token is required"})

        # Wait until both jobs have run what is due (the API, with the token).
        def settled() -> dict[str, Any] | None:
            code, document = get_json(f"{url}/api/status", TOKEN)
            assert code == 200, (document, daemon.describe())
            jobs = {j["job"]: j for j in document["jobs"]}
            done = jobs["sensor_10m"]["pending_windows"] == 0 and jobs["sensor_lost"][
                "failed_windows"
            ] == len(jobs["sensor_lost"]["recent_windows"])
            return document if done else None

        document = await until(settled, within=60)
        assert document is not None

        async with aiohttp.ClientSession() as session:
            # With the token in the address: the page takes it, drops it from the address.
            page = await browser.new_page(session)
            try:
                await page.navigate(f"{url}/#token={TOKEN}")
                seen = await rendered(page)
                shot = await page.screenshot(ARTIFACTS / "status-page.png")
                print(f"\nstatus page screenshot: {shot}")
            finally:
                await page.close()

            # Without it: the page asks; given through the form, it shows the same jobs.
            page = await browser.new_page(session)
            try:
                await page.navigate(f"{url}/")
                await page.wait_for(FORM_SHOWN, within=20)
                assert await page.evaluate("document.querySelectorAll('article.job').length") == 0
                await page.evaluate(
                    f"""(() => {{
                      document.getElementById('token-input').value = {json.dumps(TOKEN)};
                      document.getElementById('token-form').requestSubmit();
                    }})()"""
                )
                prompted = await rendered(page)
            finally:
                await page.close()
        code, _ = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.describe()

    # What a person sees: both jobs, by name, in the config's order.
    assert [j["name"] for j in seen["jobs"]] == ["sensor_10m", "sensor_lost"]
    assert [j["name"] for j in prompted["jobs"]] == ["sensor_10m", "sensor_lost"]
    good, lost = seen["jobs"]

    # The state file (read with sqlite3) is the oracle for each window's state.
    path = tmp_path / "state.db"
    _, good_ledger, _ = read_state(path, "sensor_10m")
    _, lost_ledger, lost_attempts = read_state(path, "sensor_lost")
    # A window may close while the test runs (they are ten minutes long): the newest one shown
    # may still wait for its run (pending) or be under way (running); all the others are settled.
    *older, newest = good["windows"]
    assert len(good["windows"]) == 24  # the strip's length: the last 24 complete windows
    assert {w["state"] for w in older} == {"succeeded"}
    assert newest["state"] in {"succeeded", "pending", "running"}
    succeeded = {iso(row.start) for row in good_ledger if row.status == "succeeded"}
    shown_succeeded = [w for w in good["windows"] if w["state"] == "succeeded"]
    assert {w["start"] for w in shown_succeeded} <= succeeded
    assert all(w["title"].startswith("succeeded: ") for w in shown_succeeded)

    failed = {iso(row.start) for row in lost_ledger if row.status == "failed"}
    *older, newest = lost["windows"]
    assert {w["state"] for w in older} == {"failed"}
    assert newest["state"] in {"failed", "pending", "running"}
    shown_failed = [w for w in lost["windows"] if w["state"] == "failed"]
    assert len(shown_failed) >= 17  # its start is three hours back: 18 windows, give or take one
    assert {w["start"] for w in shown_failed} <= failed
    for window in shown_failed:
        # Spelled out, not colour alone: the tooltip and the screen-reader text say "failed".
        assert window["title"].startswith(("failed: ", "failed, at risk: "))
        assert window["hidden_text"] == window["title"]
        assert "database not found" in window["title"]
        assert window["colour"] == shown_failed[0]["colour"]
    # At risk: failed, and its data older than now - 2 h (the page's `now`, its own document's).
    risky_before = parse(seen["now"]) - timedelta(hours=2)
    at_risk = [w for w in shown_failed if parse(w["start"]) < risky_before]
    assert at_risk, "the oldest failed windows should be at risk"
    assert [w["at_risk"] for w in lost["windows"]] == [w in at_risk for w in lost["windows"]]
    for window in at_risk:
        assert window["title"].startswith("failed, at risk: ")
    assert lost["facts"]["At risk"].split()[0] == str(len(at_risk))
    # Red, unlike the succeeded green.
    assert shown_failed[0]["colour"] != shown_succeeded[0]["colour"]
    assert lost["facts"]["Failed"] == str(len(shown_failed))
    assert lost["facts"]["Last run"] == "failed"
    # The last errors: the server's own words, as the history recorded them.
    errors = {a.error for a in lost_attempts if a.error}
    assert any(e in text for e in errors for text in lost["errors"]), (errors, lost["errors"])
    assert "database not found" in lost["errors"][0]
    assert good["errors"] == []

    # The connection, its URL and circuit (permanent refusals do not open it).
    assert seen["connections"] == [["plant", "influxdb1", influxd.url, "closed"]]
    assert seen["problem"] is None
    assert not seen["form_shown"]
    assert not prompted["form_shown"]

    # No secret in the page: not in its HTML, not left in the address.
    for view in (seen, prompted):
        assert TOKEN not in view["html"]
        assert TOKEN not in view["href"]
    assert seen["stored"] == TOKEN  # kept for this tab only (sessionStorage)
    assert document["jobs"][1]["job"] == "sensor_lost"


async def rendered(page: Page) -> dict[str, Any]:
    """What the page shows once it has drawn a status document."""
    await page.wait_for("document.body && document.body.dataset.rendered", within=20)
    seen: dict[str, Any] = await page.evaluate(SEEN)
    return seen


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def until(check: Any, within: float) -> Any:
    """`check()` (run on a thread: it blocks) until it gives something other than None."""
    deadline = time.monotonic() + within
    while True:
        value = await asyncio.to_thread(check)
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled within {within:g} s")
        await asyncio.sleep(0.5)
