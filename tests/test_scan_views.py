"""Scan views: the heatmap and lead-lag figures (offline HTML, checked in
Chromium), and notebooks/pair_scan.ipynb under papermill on generated data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from quantlab.scan import ScanSettings, ScanWindows, lead_lag
from quantlab.scan.run import scan
from quantlab.scan.source import write_universe
from quantlab.scan.synthetic import synthetic_universe
from tests.jupyter_harness import CHROMIUM, CHROMIUM_ARGS, chromium_available

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "pair_scan.ipynb"
TF = 60_000


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    u = synthetic_universe(8, 1500, n_planted=2, seed=5)
    d = tmp_path_factory.mktemp("archive")
    write_universe(d, u.bars)
    s0 = u.start_ms
    w = ScanWindows(formation=(s0, s0 + 1000 * TF), evaluation=(s0 + 1000 * TF, s0 + 1500 * TF))
    return u, d, scan(u.symbols, archive=d, windows=w, settings=ScanSettings(min_bars=100),
                      workers=1)


def _html(fig) -> str:
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    return file_html(fig, INLINE, "scan")


def test_heatmap_is_symmetric_with_hover_figures(scanned):
    from bokeh.models import ColumnDataSource, HoverTool

    from quantlab.ui.scan_views import correlation_heatmap

    u, _, res = scanned
    fig = correlation_heatmap(res.table)
    src = fig.select_one(ColumnDataSource)
    assert len(src.data["x"]) == 2 * len(res.table) == 56
    cells = {(a, b): v for a, b, v in zip(src.data["y"], src.data["x"], src.data["value"])}
    a, b = u.planted[0]
    assert cells[(a, b)] == cells[(b, a)] == res.table.set_index(["y", "x"]).loc[(a, b), "corr_returns"]
    outlined = {(a, b) for a, b, c in zip(src.data["y"], src.data["x"], src.data["line"]) if c}
    assert set(u.planted) <= outlined
    tips = dict(fig.select_one(HoverTool).tooltips)
    assert {"coint p (BY adj)", "half-life (bars)", "hedge ratio", "Sharpe (evaluation)"} <= set(tips)
    html = _html(fig)
    assert "cdn.bokeh.org" not in html and "coint p (BY adj)" in html


def test_lead_lag_figure_says_who_leads():
    from quantlab.ui.scan_views import lead_lag_figure

    rng = np.random.default_rng(2)
    r = rng.normal(scale=1e-3, size=3001)
    x = 100 * np.exp(np.cumsum(r))
    y = 40 * np.exp(np.cumsum(np.r_[np.zeros(2), r[:-2]] + rng.normal(scale=3e-4, size=3001)))
    fig = lead_lag_figure(lead_lag(y, x, max_lag=6), y="ETHUSDT", x="BTCUSDT", bar_seconds=60)
    assert fig.title.text.startswith("BTCUSDT leads ETHUSDT by 2 bars = 120 s")


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason=f"Chromium not installed at {CHROMIUM}")
def test_heatmap_offline_html_renders_in_chromium(scanned, tmp_path):
    from playwright.sync_api import sync_playwright

    from quantlab.ui.scan_views import correlation_heatmap

    path = tmp_path / "heatmap.html"
    path.write_text(_html(correlation_heatmap(scanned[2].table)))
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("http*://**", lambda route: route.abort())  # offline: no network at all
            page.goto(path.as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length === 1 && "
                                   "Bokeh.documents[0].roots().length === 1", timeout=30_000)
            n = page.evaluate("() => Bokeh.documents[0].roots()[0].renderers[0]"
                              ".data_source.data['x'].length")
            page.wait_for_selector(".bk-Canvas, canvas", state="attached", timeout=30_000)
        finally:
            browser.close()
    assert errors == [] and n == 56


def test_notebook_is_thin_tagged_and_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("symbols", "timeframe", "formation", "evaluation", "archive", "db_path", "files",
                 "market", "q", "adjust", "min_notional", "workers", "scheduler", "top_n"):
        assert f"\n{name} =" in "\n" + tagged[0].source, name
    assert len(code) <= 8 and max(len(c.source.splitlines()) for c in code if c is not tagged[0]) <= 12
    assert "output_notebook(resources=bokeh_resources()" in "".join(c.source for c in code)


@pytest.mark.slow
def test_notebook_runs_under_papermill(scanned, tmp_path):
    u, d, res = scanned
    out = tmp_path / "pair_scan.out.ipynb"
    s0 = u.start_ms
    iso = lambda ms: np.datetime_as_string(np.datetime64(ms, "ms")) + "Z"  # noqa: E731
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(out),
           "-p", "archive", str(d), "-p", "timeframe", "1m",
           "-p", "formation", f"{iso(s0)}/{iso(s0 + 1000 * TF)}",
           "-p", "evaluation", f"{iso(s0 + 1000 * TF)}/{iso(s0 + 1500 * TF)}",
           "-p", "top_n", "5", "-p", "lead_lag_max", "5",
           "--cwd", str(tmp_path), "-k", "python3", "--log-level", "WARNING",
           "--execution-timeout", "120"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"papermill failed:\n{proc.stderr[-4000:]}"
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    summary = json.loads(text[text.index('{"pairs"'):].splitlines()[0])
    assert summary["pairs"] == 28 and summary["selected"] == int(res.table["selected"].sum()) >= 2
    assert (summary["lead_lag"]["y"], summary["lead_lag"]["x"]) in set(u.planted)
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert any("rank" in o["data"]["text/html"] for o in html)  # the ranked table
    bokeh = [o for o in outputs if "application/vnd.bokehjs_exec.v0+json" in o.get("data", {})]
    assert len(bokeh) >= 2  # heatmap and lead-lag shown
