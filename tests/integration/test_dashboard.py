"""The live dashboard (``GET /`` on the daemon's HTTP port) in a real browser, and the rule it shares
with ``ocld report``: draw from the first real metric point.

The browser test runs a daemon on the real broker and Redis, feeds it a stream whose concept flips
(a seeded linear rule, labels swapped from 2,500 on) with a few malformed records, and loads the page in
headless Chromium from Debian's packages, driven by selenium through chromedriver. It checks that
the charts hold the daemon's data, that the drift event is listed and marked on the accuracy chart,
that the DLQ panel shows the reasons, and that the page follows a batch produced after it loaded.
It saves a screenshot of the page to the test's folder, and to ``docs/dashboard.png`` when
``OCLD_UPDATE_SCREENSHOT=1`` (so that a test run does not rewrite the repository's picture).

Chromium is installed by the ``chromium`` fixture (``tests/install_chromium.sh``) when missing, as on
a new CI machine; the test is skipped, with the reason, only when that install cannot be done.
"""

from __future__ import annotations

import doctest
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from ocld.stream import report
from ocld.stream.client import StateClient
from ocld.stream.daemon import Daemon
from ocld.stream.http import DaemonMetrics, HealthServer
from ocld.stream.store import Keys, connect
from tests.helpers import ROOT, encode_rows, produce, wait_until

pytestmark = pytest.mark.integration

SCREENSHOT = ROOT / "docs" / "dashboard.png"
UPDATE_SCREENSHOT = os.environ.get("OCLD_UPDATE_SCREENSHOT") == "1"
FLIP_AT = 2500  # labels are swapped from this labelled sample on: a concept drift


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """(chromium, chromedriver): Debian's packages, installed by ``tests/install_chromium.sh`` when missing."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary and driver:
        return binary, driver
    done = subprocess.run(["bash", str(ROOT / "tests" / "install_chromium.sh")], capture_output=True, text=True,
                          timeout=900, check=False)
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if done.returncode != 0 or not (binary and driver):
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        pytest.skip(f"Chromium cannot be installed here (tests/install_chromium.sh exited {done.returncode}: "
                    f"{' / '.join(tail)})")
    return binary, driver


@pytest.fixture
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # As root, with no screen and no network beyond loopback: no sandbox, no GPU, no background traffic.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield drv
    finally:
        drv.quit()


def _js(drv: Any, expr: str) -> Any:
    return drv.execute_script(f"return {expr};")


def _stream(start: int, n: int) -> list[bytes]:
    """Rows ``start`` .. ``start + n`` of a seeded stream: six normal features, the label a linear rule
    of two of them, swapped from ``FLIP_AT`` on (the error jumps from about 0.06 to 0.33 over the next
    250 samples, and ADWIN fires within about 30)."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(start + n, 6))[start:]
    rule = X[:, 0] + 0.5 * X[:, 1] > 0
    y = [int(r) ^ int(start + i >= FLIP_AT) for i, r in enumerate(rule)]
    return encode_rows(X, y)


def test_dashboard_shows_a_running_daemon_in_a_browser(make_config, broker, redis_url, browser, tmp_path):
    cfg = make_config(http={"port": 0}, snapshot={"every_samples": 1000, "every_seconds": 60})
    client = StateClient(redis_url)
    daemon = Daemon(cfg)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False, "max_seconds": 240}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: daemon.http is not None and daemon.state == "running", 60, "the daemon running")
        base = f"http://127.0.0.1:{daemon.http.port}"
        # Batches learned one after another, so that the metrics stream holds a curve, not one point.
        learned = 0
        for i, chunk in enumerate(range(0, 4000, 500)):
            values = _stream(chunk, 500)
            if i == 2:
                values += [b"{oops", b'{"x": [1, 2], "y": 1}', b"{not json", b'{"id": "nobody", "y": 1}']
            produce(broker, cfg.kafka.topic, values)
            learned += 500
            wait_until(lambda n=learned: any(p.get("labelled_seen") == n for p in client.metrics(cfg.name, 5)), 60,
                       f"a metric point at {learned} labelled samples")
        flip = wait_until(lambda: [e for e in client.drift_events(cfg.name) if e["index"] >= FLIP_AT], 30,
                          "a drift event after the flip in Redis")
        drift = client.drift_events(cfg.name)  # every event is shown (also those the learner did not act on)
        assert client.metrics(cfg.name, 10_000)[0]["labelled_seen"] > 0, "no point is published before learning"

        browser.get(base + "/")
        wait_until(lambda: _js(browser, "window.ocld && window.ocld.points.length") >= 8, 30,
                   "the page's accuracy chart to hold the 8 metric points")
        wait_until(lambda: _js(browser, "document.querySelectorAll('#drift-table tr.drift-event').length") >= 1, 30,
                   "the drift event listed on the page")
        wait_until(lambda: _js(browser, "window.ocld.markersDrawn") >= 1, 30, "the drift event marked on the chart")
        wait_until(lambda: browser.find_element("id", "t-labelled").text == "4,000", 30,
                   "the labelled-samples tile to show 4,000")

        x, window_acc, total_acc = _js(browser, "window.ocld.charts.accuracy.data")
        assert x == sorted(x) and x[-1] == 4000 and len(x) >= 8
        assert all(0.0 <= a <= 1.0 for a in window_acc) and all(0.0 <= a <= 1.0 for a in total_acc)
        assert max(window_acc) > 0.6, window_acc  # a real curve, not the zero of a point before learning
        rows = [el.text for el in browser.find_elements("css selector", "#drift-table tr.drift-event")]
        assert len(rows) == len(drift) and rows[0].startswith(f"{drift[-1]['index']:,} "), rows  # newest first
        assert any(row.startswith(f"{flip[0]['index']:,} ") for row in rows), rows
        assert _js(browser, "window.ocld.markersDrawn") == len(drift)
        assert len(_js(browser, "window.ocld.charts.rate.data[0]")) >= 2
        assert _js(browser, "window.ocld.charts.learner !== null"), "the Kalman head's forgetting factor is drawn"
        reasons = {el.get_attribute("data-reason") for el in browser.find_elements("css selector", "#dlq .bar")}
        assert reasons and reasons == {k for k, v in daemon.status_now().dlq_by_reason.items() if v}, reasons
        assert browser.find_element("id", "state").text == "running"
        assert browser.find_element("id", "t-snapshot-age").text not in ("", "–", "none yet")

        # Live: a batch produced now reaches the open page (tiles and charts) without a reload.
        produce(broker, cfg.kafka.topic, _stream(4000, 500))
        wait_until(lambda: browser.find_element("id", "t-labelled").text == "4,500", 30, "the tile to follow to 4,500")
        wait_until(lambda: _js(browser, "window.ocld.charts.accuracy.data[0].slice(-1)[0]") == 4500, 30,
                   "the accuracy chart to follow to 4,500")

        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
        # The whole page in one picture: a viewport as tall as the page.
        height = int(_js(browser, "document.documentElement.scrollHeight"))
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 1280, "height": min(height, 4000), "deviceScaleFactor": 1, "mobile": False})
        wait_until(lambda: _js(browser, "window.innerHeight") >= min(height, 4000), 10, "the tall viewport")
        shot = SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000

        # The daemon gone: the page says so and keeps the last data it received.
        daemon.stop()
        thread.join(60)
        wait_until(lambda: "daemon unreachable" in browser.find_element("id", "banner").text, 15,
                   "the page to say that the daemon is unreachable")
        assert browser.find_element("id", "state").text == "unreachable"
        assert browser.find_element("id", "t-labelled").text == "4,500"
    finally:
        daemon.stop()
        thread.join(60)
    assert not thread.is_alive()


def test_api_and_report_start_at_the_first_real_point(redis_url, name):
    """A metrics stream written by an older daemon starts with a point published before anything was
    learned (labelled_seen 0, accuracy 0.0). ``ocld report`` and /api/series both start from the first
    real point; /api/series returns only what is new after its cursor, and refuses a cursor it did not give."""
    r = connect(redis_url)
    keys = Keys(name)
    r.xadd(keys.metrics, {"t": 1.0, "samples_seen": 0, "labelled_seen": 0, "accuracy": 0.0, "throughput": 0.0})
    for n, acc in ((30288, 0.897), (30788, 0.9)):
        r.xadd(keys.metrics, {"t": 2.0, "samples_seen": n, "labelled_seen": n, "accuracy": acc, "throughput": 9e3,
                              "mixture_weights": orjson.dumps({"KalmanHead": 0.7, "AnalyticRidge": 0.3})})
    r.xadd(keys.drift, {"index": 30500, "detector": "ADWIN", "kind": "error", "action": "adapt", "at": 2.0})
    r.hset(keys.status, mapping={"learner": "OnlineMixture", "labelled_seen": 30788, "accuracy_total": 0.9})

    run = report.run_from_redis(StateClient(redis_url), name)
    assert run["curve"]["n"] == [30288, 30788] and run["curve"]["accuracy_window"] == [0.897, 0.9]
    assert run["curve"]["weights"] == {"KalmanHead": [0.7, 0.7], "AnalyticRidge": [0.3, 0.3]}
    assert doctest.testmod(report).failed == 0

    metrics = DaemonMetrics(name)
    metrics.attach_series(r, keys)
    server = HealthServer(metrics, lambda: {"ready": True}).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, body = _get(base + "/api/series")
        first = orjson.loads(body)
        assert code == 200 and [p["labelled_seen"] for p in first["metrics"]] == [30288, 30788]
        assert [e["index"] for e in first["drift"]] == [30500]
        assert first["metrics"][0]["mixture_weights"] == {"KalmanHead": 0.7, "AnalyticRidge": 0.3}
        r.xadd(keys.metrics, {"t": 3.0, "labelled_seen": 31288, "accuracy": 0.91})
        code, body = _get(base + "/api/series?since=" + first["cursor"])
        again = orjson.loads(body)
        assert [p["labelled_seen"] for p in again["metrics"]] == [31288] and again["drift"] == []
        assert _get(base + "/api/series?since=" + again["cursor"])[1].startswith(b'{"metrics":[],"drift":[]')
        code, body = _get(base + "/api/series?since=nonsense")
        assert code == 400 and b"cursor" in body
        assert _get(base + "/api/status")[0] == 503  # no status built: the page says the daemon is starting
        code, page = _get(base + "/")
        assert code == 200 and b"vendor/uPlot.iife.min.js" in page and b"dashboard.js" in page
        for path in ("/dashboard.js", "/dashboard.css", "/vendor/uPlot.iife.min.js", "/vendor/uPlot.min.css"):
            assert _get(base + path)[0] == 200, path
        assert _get(base + "/../pyproject.toml")[0] == 404 and _get(base + "/vendor/README.md")[0] == 404
    finally:
        server.stop()
