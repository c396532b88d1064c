"""The live monitor in a real JupyterLab, driven by headless Chromium.

One JupyterLab (free port, random token, temp HOME/config) serves a copy of
``live_monitor.ipynb`` whose parameters point at a temp DB and a synthetic
replay at 1,000 trades/s. The test runs all cells and checks, from what
BokehJS rendered (``window.Bokeh.documents``, not the kernel status bar):

* the plots' data keeps changing for 10 s;
* a new cell (``1+1``) executes in under 2 s while the stream runs;
* changing the window slider changes the z-score plot;
* the Stop button stops the stream, and the kernel stays usable;
* no JavaScript errors in the console.

Screenshots are saved in the test's tmp dir; failures name them.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pytest

from tests.jupyter_harness import (
    Browser, JupyterLab, append_and_run_cell, bokeh_column, bokeh_sources, cell_outputs_text,
    chromium_available, run_all_cells, set_notebook_parameters,
)
from tests.util import wait_until

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "live_monitor.ipynb"
PAIR = "ETHUSDT/BTCUSDT"
BARS = f"{PAIR}:bars"
FORMING = f"{PAIR}:forming"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="Chromium not installed at /usr/bin/chromium"),
]


def _finite(values) -> list[float]:
    return [v for v in values or [] if isinstance(v, (int, float)) and math.isfinite(v)]


def _snapshot(page) -> tuple:
    """What the browser currently shows of the pair: bar count, newest bar
    time, forming bar time and close."""
    src = {s["name"]: s for s in bokeh_sources(page)}
    bars, forming = src.get(BARS, {}), src.get(FORMING, {})
    return (bars.get("n", 0), bars.get("last", {}).get("t"),
            forming.get("last", {}).get("t"), forming.get("last", {}).get("y_close"),
            forming.get("last", {}).get("x_close"))


def _active_scroll_tools(page) -> list:
    """Scroll tools active in any rendered plot's toolbar (should be none)."""
    return page.evaluate("""() => {
        const out = [];
        for (const doc of window.Bokeh.documents) for (const m of doc.all_models) {
            if (m.type === 'Toolbar' || (m.constructor && m.constructor.name === 'Toolbar')) {
                const a = m.active_scroll;
                if (a && a !== 'auto') out.push(String(a.type || a));
                if (a === 'auto') out.push('auto');
            }
        }
        return out; }""")


def _x_range(page) -> tuple:
    return tuple(page.evaluate("""(name) => {
        for (const doc of window.Bokeh.documents) for (const m of doc.all_models)
            if (m.x_range && m.renderers && m.renderers.length)
                return [m.x_range.start, m.x_range.end];
        return [null, null]; }""", BARS))


def _x_range_touched(page) -> bool:
    """BokehJS's flag on the shared time range: set by a wheel zoom or a pan,
    cleared when the range is told to follow again."""
    return bool(page.evaluate("""() => {
        for (const doc of window.Bokeh.documents) for (const m of doc.all_models)
            if (m.x_range && m.renderers && m.renderers.length)
                return m.x_range.have_updated_interactively;
        return null; }"""))


def _scroll_top(page) -> float:
    return page.evaluate("""() => {
        let best = 0;
        for (const el of document.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook'))
            best = Math.max(best, el.scrollTop);
        return best + window.scrollY; }""")


def test_live_monitor_in_jupyterlab(tmp_path):
    root = tmp_path / "nb"
    root.mkdir()
    nb = root / "live_monitor.ipynb"
    shutil.copy(NOTEBOOK, nb)
    # window 8: the z-score (rolling OLS) needs 8 + 8 - 1 = 15 bars, 5 needs 9
    set_notebook_parameters(nb, rate=1000.0, window=8, timeframe="1s",
                            db_path=str(tmp_path / "live.db"))
    shots = tmp_path / "screenshots"

    t_begin = time.monotonic()

    def phase(name: str) -> None:  # timings, shown with pytest -s
        print(f"[{time.monotonic() - t_begin:5.1f} s] {name}")

    with JupyterLab(root, log_path=tmp_path / "jupyterlab.log") as lab, Browser(shots) as browser:
        phase("JupyterLab up")
        page = browser.open_notebook(lab, "live_monitor.ipynb")
        phase("notebook open, kernel idle")

        def fail(msg: str, name: str) -> str:
            return f"{msg} (screenshot: {browser.screenshot(page, name)}, log: {lab.log_path})"

        run_all_cells(page)
        # the first closed bars arrive a bit over a second after the stream starts
        try:
            wait_until(lambda: _snapshot(page)[0] >= 2, timeout=45, message="first bars in the plot")
        except AssertionError as exc:
            raise AssertionError(fail(str(exc), "no-bars")) from None
        assert page.locator("canvas").count() > 0, fail("no canvas rendered", "no-canvas")
        phase("streaming")

        # 1) liveness: for 10 s, the plotted data differs every time we look (about
        #    once a second) and closed bars keep arriving
        seen = [_snapshot(page)]
        t_start = time.monotonic()
        while time.monotonic() - t_start < 10:
            page.wait_for_timeout(1000)
            seen.append(_snapshot(page))
        still = sum(a == b for a, b in zip(seen, seen[1:]))
        # forming bar every 0.3 s, a bar every second: one still look is a browser hiccup
        # (a GC pause on a loaded machine), two are a stalled stream
        assert len(seen) >= 6 and still <= 1, \
            fail(f"plot data stood still {still} times in {len(seen) - 1} looks: {seen}", "stale")
        assert seen[-1][0] >= seen[0][0] + 7, fail(f"bars did not keep closing: {seen}", "bars")

        phase("live for 10 s")
        # 2) the kernel stays responsive under 1,000 trades/s
        t0 = time.monotonic()
        idx = append_and_run_cell(page, "1+1")
        wait_until(lambda: cell_outputs_text(page, idx).strip() == "2", timeout=10,
                   message="1+1 output")
        took = time.monotonic() - t0
        print(f"1+1 took {took:.2f} s while streaming at 1,000 trades/s")
        assert took < 2.0, fail(f"1+1 took {took:.2f} s while streaming", "slow-cell")

        phase("1+1 done")
        # 3) the window slider changes the z-score plot
        def zscores() -> dict:
            t = bokeh_column(page, BARS, "t") or []
            z = bokeh_column(page, BARS, "zscore") or []
            return dict(zip(t, z))

        wait_until(lambda: len(_finite(zscores().values())) >= 3, timeout=30,
                   message="z-scores with window=8")
        before = zscores()
        slider = page.locator(".widget-slider", has_text="window")
        readout = slider.locator(".widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("5")
        page.keyboard.press("Enter")

        def changed() -> bool:
            after = zscores()
            common = [t for t in before if t in after]
            diff = [t for t in common if before[t] != after[t]]
            return len(common) >= 3 and len(diff) >= 3

        try:
            wait_until(changed, timeout=10, message="z-score plot to change after the slider")
        except AssertionError as exc:
            raise AssertionError(fail(str(exc), "slider")) from None
        after = zscores()
        assert len(_finite(after.values())) > len(_finite(before.values())), \
            fail("a shorter window must give z-scores for more bars", "slider-count")

        phase("slider done")
        # 3b) the page scrolls over the plots: no tool owns the wheel, the time
        #     axis follows the newest bars until the user pans, a double click
        #     returns to following
        assert _active_scroll_tools(page) == [], fail("a tool captures the wheel", "wheel-tool")
        canvas = page.locator("canvas").first
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        r0, top0 = _x_range(page), _scroll_top(page)
        page.mouse.move(cx, cy)
        page.mouse.wheel(0, 300)
        wait_until(lambda: _scroll_top(page) != top0, timeout=5,
                   message="the notebook to scroll under the wheel")
        # A new closed bar may widen the span (the axis shows all bars until it
        # holds the follow interval), so the span is no witness; BokehJS marks a
        # range changed by a wheel zoom or a pan as "updated interactively".
        assert not _x_range_touched(page), \
            fail(f"the wheel zoomed the plot: {r0} -> {_x_range(page)}", "wheel-zoom")
        # following: the end of the time axis moves with new bars
        end0 = _x_range(page)[1]
        wait_until(lambda: _x_range(page)[1] > end0, timeout=10, message="the axis to follow")
        # a drag (pan) stops following ...
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 200, cy, steps=8)
        page.mouse.up()
        panned = _x_range(page)
        assert _x_range_touched(page), fail("the drag did not pan the time axis", "pan-flag")
        page.wait_for_timeout(2500)  # more than two bars: following would move the axis
        assert _x_range(page) == panned, fail("the axis moved after the user panned", "pan")
        # ... a double click follows again
        page.mouse.dblclick(cx, cy)
        wait_until(lambda: _x_range(page)[1] > panned[1] + 500, timeout=10,
                   message="the axis to follow again after a double click")
        phase("wheel, follow done")
        # 4) Stop stops the stream; the kernel is still usable
        page.get_by_role("button", name="Stop").click()
        wait_until(lambda: "stopped" in page.locator(".widget-html", has_text="trades/s")
                   .first.inner_text(), timeout=30, message="status strip to say stopped")
        frozen = _snapshot(page)
        page.wait_for_timeout(2000)
        assert _snapshot(page) == frozen, fail("plots still change after Stop", "after-stop")
        idx = append_and_run_cell(page, "monitor.running, 40 + 2")
        wait_until(lambda: "42" in cell_outputs_text(page, idx), timeout=10,
                   message="a cell after Stop")
        assert "False" in cell_outputs_text(page, idx)
        browser.screenshot(page, "final")
        phase("stopped")

        # 5) no JavaScript errors
        assert browser.errors == [], fail(f"console errors: {browser.errors}", "console")


def test_live_benchmark_harness_short_run(tmp_path):
    """benchmarks/live.py for a few seconds at one rate: it measures tick to
    screen in the page, the 1+1 latency and memory, and prints them."""
    import json
    import subprocess
    import sys

    out = tmp_path / "live.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "live.py"), "--rates",
                           "200", "--seconds", "5", "--probes", "1", "--skip-params",
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "tick to screen p50" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    r = json.loads(out.read_text())["rates"][0]
    tts = r["tick_to_screen_ms"]
    assert 0 < tts["p50"] <= tts["p95"] <= tts["p99"] < 10_000, tts
    assert 0 < r["one_plus_one_s"]["worst"] < 10, r["one_plus_one_s"]
    assert r["js_heap_mb"] > 1 and r["kernel_rss_mb"] > 10
    assert r["console_errors"] == []
