"""The report and serve's dashboard in a real browser: the report opens from disk with no console error and
no network request, every section and every plot renders, the screenshot is not blank, the page reads at
phone width; the dashboard signs in once by its key, renders under its Content-Security-Policy with no console
error, shows a scenario named in markup as text, and its figures change while requests stream."""

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from cloudmatrix.cli.app import app
from tests.emulator.conftest import API_KEY, start_server

runner = CliRunner()


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> tuple[Path, dict]:
    """The report on its built-in defaults, as a fresh clone makes it."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = runner.invoke(app, ["report", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def _requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_report_opens_offline_and_every_plot_renders(browser, report_page, tmp_path: Path) -> None:
    path, summary = report_page
    assert summary["bytes"] < 10 * 1024 * 1024
    browser.get_log("performance")  # drain what the browser's own start-up pages requested
    browser.get(path.as_uri())
    for _ in range(100):
        if browser.execute_script("return document.querySelectorAll('.plotly-graph-div .main-svg').length") >= 5:
            break
        time.sleep(0.1)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    urls = _requests(browser)
    assert path.as_uri() in urls
    assert [u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")] == []
    for sid in summary["sections"]:
        assert browser.execute_script(f"return document.getElementById('{sid}') !== null"), sid
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('.plotly-graph-div')).map(function (d) {"
        " var s = d.querySelector('svg.main-svg'); var r = s ? s.getBoundingClientRect() : {width: 0, height: 0};"
        " return [d.id, r.width, r.height, d.querySelectorAll('.point, .bars path, .trace path').length]; })"
    )
    assert len(sizes) == 6
    for fig_id, width, height, marks in sizes:
        assert width > 300 and height > 200 and (marks > 0 or fig_id == "fig-sweep"), (fig_id, width, height, marks)
    # the sweep first after the verdict: three heat maps drawn, each cell's ratio written in it
    assert summary["sections"][:2] == ["verdict", "sweep"]
    assert browser.execute_script("return document.querySelectorAll('#fig-sweep .heatmaplayer .hm').length") == 3
    cells = browser.execute_script("return document.querySelectorAll('#fig-sweep .heatmaplayer text').length")
    assert cells >= 3 * 8 * 9 - 3, cells
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        stat = ImageStat.Stat(im.convert("L"))
        assert stat.stddev[0] > 10 and len(im.convert("RGB").getcolors(1 << 20) or []) > 50  # not blank
    # a click sorts a table; at phone width nothing spills out of the page
    browser.execute_script("document.querySelector('#compare table th:nth-child(8)').click()")
    assert browser.execute_script("return document.querySelector('#compare th.sorted-asc') !== null")
    browser.set_window_size(390, 844)
    for _ in range(40):  # plotly redraws its figures for the new width a moment after the resize
        time.sleep(0.1)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        if overflow <= 1:
            break
    assert overflow <= 1, overflow


HOSTILE = "<img src=x onerror=document.title='pwned'>"


def test_dashboard_figures_change_while_requests_stream(browser) -> None:
    server = start_server("--speed", "4", "--api-key", API_KEY, "--set", f"name={HOSTILE}")
    stop = threading.Event()

    def load() -> None:
        body = {"model": "deepseek-r1", "prompt": "x" * 400, "max_tokens": 32, "stream": True}
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            while not stop.is_set():
                with client.stream("POST", f"{server.url}/v1/completions", json=body) as r:
                    for _ in r.iter_bytes():
                        pass

    try:
        browser.get(f"{server.url}/dashboard?key={API_KEY}")  # signs in, then the key leaves the URL
        assert browser.current_url == f"{server.url}/dashboard"
        assert HOSTILE in browser.execute_script("return document.querySelector('header p').textContent")
        assert browser.execute_script("return document.querySelectorAll('img').length") == 0
        assert "pwned" not in browser.title
        time.sleep(1.5)
        before = browser.execute_script("return document.getElementById('tokens_per_s').textContent")
        workers = [threading.Thread(target=load, daemon=True) for _ in range(8)]
        for w in workers:
            w.start()
        seen = before
        for _ in range(60):
            time.sleep(0.25)
            seen = browser.execute_script("return document.getElementById('tokens_per_s').textContent")
            tpot = browser.execute_script("return document.getElementById('tpot_p50').textContent")
            if seen not in (before, "–", "0.0") and tpot.endswith("ms"):
                break
        assert seen != before and tpot.endswith("ms"), (before, seen, tpot)
        assert "requests in flight" in browser.execute_script("return document.getElementById('status').textContent")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        stop.set()
        server.proc.terminate()
        server.proc.wait(timeout=15)
