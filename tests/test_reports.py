"""Pair reports: papermill executes notebooks/pair_report.ipynb in real kernels,
nbconvert writes offline HTML, headless Chromium opens it with every non-file
request blocked.

Data: generated kline files (data.binance.vision layout) of a cointegrated
pair and an unrelated walk; the real 2022-2023 minutes from ../shared/data
when present.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from quantlab.cli import main
from quantlab.errors import ConfigError
from quantlab.reports import parameters as rp
from quantlab.reports import render
from quantlab.reports.downsample import minmax_indices
from quantlab.reports.study import check_causality, study_pair
from tests.jupyter_harness import CHROMIUM, CHROMIUM_ARGS, chromium_available
from tests.pairs import cointegrated_pair
from tests.util import wait_until

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "pair_report.ipynb"
N_BARS = 3000
XSS = "<script>alert(1)</script>"
#: Bokeh figures the report draws: 8 linked time series + the sweep heatmap.
N_FIGURES = 9


def write_klines(path: Path, close: np.ndarray, seed: int = 0, start: str = "2024-01-01") -> Path:
    """A data.binance.vision 1m klines CSV with header."""
    rng = np.random.default_rng(seed)
    n = close.size
    t = pd.date_range(start, periods=n, freq="1min", tz="UTC").as_unit("ms").asi8
    o = np.r_[close[0], close[:-1]]
    vol = rng.uniform(1, 10, n)
    pd.DataFrame({"open_time": t, "open": o, "high": np.maximum(o, close) * 1.0001,
                  "low": np.minimum(o, close) * 0.9999, "close": close, "volume": vol,
                  "close_time": t + 59_999, "quote_volume": vol * close,
                  "count": rng.integers(1, 50, n), "taker_buy_volume": vol / 2,
                  "taker_buy_quote_volume": vol * close / 2, "ignore": 0}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def kline_files(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("klines")
    y, x = cointegrated_pair(N_BARS, seed=11)
    walk = 30 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 1e-3, N_BARS)))
    return [str(write_klines(d / "BTCUSDT-1m-2024-01-01.csv", x, 1)),
            str(write_klines(d / "ETHUSDT-1m-2024-01-01.csv", y, 2)),
            str(write_klines(d / "AVAXUSDT-1m-2024-01-01.csv", walk, 3))]


def _aligned(files):
    from quantlab.pairs import load_pair_bars

    return load_pair_bars(y="ETHUSDT", x="BTCUSDT", files=files, timeframe="1m")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# --- parameters --------------------------------------------------------------------------------
def test_unknown_parameter_lists_the_valid_names():
    with pytest.raises(ConfigError) as exc:
        rp.validate_parameters({"windw": 90, "files": ["a.csv"]})
    msg = str(exc.value)
    assert "windw" in msg and "fix the name" in msg
    for name in ("window", "hedge", "z_entry", "db_path", "files", "archive", "alert_rules"):
        assert name in msg


@pytest.mark.parametrize("values, field", [
    ({"window": "abc"}, "window"), ({"window": 2}, "window"), ({"hedge": "median"}, "hedge"),
    ({"z_entry": 2.0, "z_exit": 2.5}, "exit"), ({"timeframe": "7x"}, "timeframe"),
    ({"alert_rules": "zscore >> 2"}, "zscore"), ({"lookback": "30 days"}, "lookback"),
    ({"fee_bps": "four"}, "fee_bps"), ({"db_path": "a.db"}, "db_path"),
])
def test_wrong_values_are_refused(values, field):
    with pytest.raises(ConfigError) as exc:
        rp.validate_parameters({"files": ["a.csv"], **values})
    assert field in str(exc.value)


def test_hedge_spellings_and_cli_values():
    p = rp.validate_parameters({"files": ["a.csv"], "hedge": "rolling_ols", "alert_rules": "zscore > 2; corr < 0.3"})
    assert p.hedge == "rolling-ols" and p.alert_rules == ("zscore > 2", "corr < 0.3")
    assert rp.coerce_cli_value("[1.5, 2]") == [1.5, 2] and rp.coerce_cli_value("none") is None


def test_cli_refuses_bad_parameters_before_any_kernel(kline_files, tmp_path, capsys):
    code = main(["report", "--files", *kline_files, "--y", "ETHUSDT", "--x", "BTCUSDT",
                 "-p", "windw", "90", "--out", str(tmp_path / "r.html")])
    assert code == 2
    line = _one_line_error(capsys)
    assert "windw" in line and "window" in line
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.failed.ipynb").exists()
    code = main(["report", "--files", *kline_files, "--y", "ETHUSDT", "--x", "BTCUSDT",
                 "-p", "hedge", "median", "--out", str(tmp_path / "r.html")])
    assert code == 2 and "hedge" in _one_line_error(capsys)


def test_notebook_itself_refuses_an_unknown_name(kline_files, tmp_path):
    """papermill only warns about unknown names: the notebook's first code cell fails."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as exc:
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), cwd=str(NOTEBOOK.parent),
                            parameters={"files": kline_files, "db_path": None, "windw": 90},
                            progress_bar=False, log_output=False)
    assert exc.value.ename == "ConfigError" and "windw" in exc.value.evalue
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failed = [c for c in nb.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "notebook_parameters" in failed[0].source


def test_notebook_is_committed_clean_with_a_tagged_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    import papermill as pm

    assert set(pm.inspect_notebook(str(NOTEBOOK))) == set(rp.parameter_names())


# --- the study (pure) ----------------------------------------------------------------------------
def test_study_stamps_and_verdict(kline_files):
    aligned = _aligned(kline_files)
    params = rp.validate_parameters({"files": kline_files, "symbol_y": "ETHUSDT", "symbol_x": "BTCUSDT",
                                     "window": 60})
    st = study_pair(aligned, params)
    assert st.causality.passed and len(st.causality.cuts) == 3 and st.causality.equity_checked
    assert st.verdict().startswith("cointegrated at 1%")
    # The lag check is the backtest on signals shifted by one bar.
    from quantlab.backtest import backtest
    from quantlab.reports.study import backtest_inputs

    data = backtest_inputs(aligned, st.frame)
    lagged = backtest(data.assign(**{c: data[c].shift(1) for c in ("beta", "zscore", "half_life")}),
                      params.backtest_settings())
    assert st.lag.sharpe_lagged == lagged.summary()["sharpe"]
    assert st.lag.sharpe == st.stats["sharpe"]
    # Every statistic uses all bars.
    assert st.analysis.summary()["n_bars"] == len(aligned) == N_BARS


def test_causality_check_catches_a_look_ahead(kline_files):
    aligned = _aligned(kline_files)

    def centred(bars):  # uses bars after t: not causal
        return pd.DataFrame({"m": bars["y_close"].rolling(21, center=True).mean()}, index=bars.index)

    check = check_causality(aligned, centred(aligned), centred)
    assert not check.passed and check.failures and "FAILED" in check.line()
    causal = lambda bars: pd.DataFrame({"m": bars["y_close"].rolling(21).mean()}, index=bars.index)  # noqa: E731
    assert check_causality(aligned, causal(aligned), causal).passed


def test_downsampling_keeps_every_bucket_extreme():
    rng = np.random.default_rng(0)
    v = np.cumsum(rng.normal(size=100_003))
    v[[17, 50_001, 99_990]] = [1e6, -1e6, 5e5]
    idx = minmax_indices(v, 2000)
    assert idx.size <= 2000 and np.all(np.diff(idx) > 0)
    assert {17, 50_001, 99_990} <= set(idx.tolist())
    assert v[idx].max() == v.max() and v[idx].min() == v.min()


def test_everything_from_data_or_parameters_is_escaped(kline_files):
    aligned = _aligned(kline_files)
    params = rp.validate_parameters({"files": kline_files, "symbol_y": "ETHUSDT", "symbol_x": "BTCUSDT",
                                     "window": 60, "title": XSS})
    st = study_pair(aligned, params)
    import dataclasses

    evil = dataclasses.replace(st, params=dataclasses.replace(params, symbol_y=XSS))
    prov = {"source": {"files": [XSS]}, "carried_bars": {"y": 0, "x": 0}, "market": XSS,
            "versions": {"quantlab": XSS}}
    page = (render.header_html(evil, prov, trial_line=XSS) + render.tests_html(evil)
            + render.backtest_html(evil) + render.trades_html(evil) + render.alerts_html(evil)
            + render.honesty_html(evil))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    from quantlab.reports.index import index_html

    index = index_html([{"pair": XSS, "ok": False, "error": f"unknown symbol {XSS}", "html": XSS}])
    assert index.lower().count("<script") == 1  # the page's own sort function only
    assert "&lt;script&gt;" in index


# --- end to end: papermill + nbconvert + Chromium ------------------------------------------------
@pytest.fixture(scope="module")
def single_report(kline_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "report.html"
    ledger = out.parent / "ledger.sqlite"
    code = main(["report", "--files", *kline_files, "--y", "ETHUSDT", "--x", "BTCUSDT",
                 "--timeframe", "1m", "-p", "window", "60", "-p", "alert_rules", "zscore > 2.5",
                 "-p", "ledger_path", str(ledger), "--out", str(out)])
    assert code == 0
    return out


def test_single_report_writes_html_and_json(single_report):
    html = single_report.read_text()
    payload = json.loads(single_report.with_suffix(".json").read_text())
    assert single_report.with_suffix(".json").name == "report.json"
    h = payload["headline"]
    for key in ("hedge_ratio", "coint_pvalue", "half_life_bars", "sharpe", "break_even_fee_bps",
                "n_trials", "dsr", "verdict"):
        assert key in h, key
    assert re.fullmatch(r"[0-9a-f]{64}", payload["bars_sha256"])
    assert payload["versions"]["quantlab"] and payload["parameters"]["window"] == 60
    assert payload["timings"]["kernel_start_s"] >= 0 and payload["timings"]["export_s"] > 0
    assert h["verdict"] in html and "Causality check passed" in html and "Lag check" in html
    assert f"Trial {h['trial_k']} of {h['n_trials']} in this family" in html
    # No input cells, only the core BokehJS bundle, no CDN script.
    assert "notebook_parameters" not in html and "study_pair" not in html
    assert "<div class=\"jp-InputArea" not in html
    assert not re.search(r"<script[^>]+src=['\"]https?:", html)
    assert single_report.stat().st_size < 3_000_000


def _open_offline(path: Path):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    seen = {"errors": [], "failed": [], "blocked": [], "dialogs": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
    page.on("requestfailed", lambda r: seen["failed"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            seen["blocked"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    return pw, browser, page, seen


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Chromium not installed at /usr/bin/chromium")
def test_report_renders_offline_in_chromium(single_report):
    pw, browser, page, seen = _open_offline(single_report)
    try:
        page.wait_for_function("window.Bokeh && Bokeh.documents && Bokeh.documents.length >= 2",
                               timeout=30_000)
        # One drawn canvas per figure (Playwright locators pierce Bokeh's shadow DOM).
        wait_until(lambda: page.locator(".bk-Canvas").count() >= N_FIGURES, timeout=30,
                   message="every Bokeh figure drawn")
        plots = page.evaluate("""() => { let n = 0; for (const d of Bokeh.documents)
            for (const m of d.all_models) if (m.type === 'Figure') n++; return n; }""")
        assert plots == N_FIGURES, plots
        assert page.locator(".jp-InputArea").count() == 0  # not even markdown (tagged report-hide)
        assert page.get_by_text("Causality check passed").count() >= 1
        page.screenshot(path=str(single_report.with_suffix(".png")), full_page=True)
    finally:
        browser.close()
        pw.stop()
    assert seen["errors"] == [] and seen["failed"] == [] and seen["blocked"] == []


@pytest.fixture(scope="module")
def batch(kline_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    evil = "<img src=x onerror=alert(1)>"
    proc = subprocess.run([sys.executable, "-m", "quantlab", "report", "--files", *kline_files,
                           "--pairs", f"ETHUSDT/BTCUSDT,AVAXUSDT/BTCUSDT,{evil}/BTCUSDT",
                           "--out-dir", str(out), "--workers", "2", "-p", "window", "60",
                           "-p", "ledger_path", str(out / "ledger.sqlite")],
                          capture_output=True, text=True, timeout=600)
    return out, proc, evil


def test_batch_index_has_every_pair_and_the_failure(batch):
    out, proc, evil = batch
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # the kernels run on Unix-domain sockets in a private folder, not TCP ports
    assert "without encryption" not in proc.stderr, proc.stderr
    index = (out / "index.html").read_text()
    assert index.lower().count("<script") == 1 and "<img" not in index.lower()
    assert "&lt;img src=x onerror=alert(1)&gt;" in index.lower()
    for name in ("ETHUSDT-BTCUSDT.html", "AVAXUSDT-BTCUSDT.html"):
        assert (out / name).stat().st_size > 100_000 and f"href='{name}'" in index
        assert json.loads((out / name).with_suffix(".json").read_text())["headline"]["verdict"]
    assert "unknown symbol" in index
    failed = [line for line in proc.stderr.splitlines() if "onerror" in line.lower()]
    assert len(failed) == 1 and "unknown symbol" in failed[0]
    assert "2 of 3 reports written" in proc.stdout


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Chromium not installed at /usr/bin/chromium")
def test_batch_index_sorts_and_links_work_offline(batch):
    out, _, _ = batch
    pw, browser, page, seen = _open_offline(out / "index.html")
    try:
        rows = page.locator("#ql-index tbody tr")
        assert rows.count() == 3
        page.locator("#ql-index th", has_text="EG p (y on x)").click()
        first = page.locator("#ql-index tbody tr").first.inner_text()
        assert "ETHUSDT/BTCUSDT" in first  # the cointegrated pair has the smallest p-value
        page.locator("a", has_text="ETHUSDT/BTCUSDT").click()
        page.wait_for_function("window.Bokeh && Bokeh.documents && Bokeh.documents.length >= 2",
                               timeout=30_000)
        assert page.url.endswith("ETHUSDT-BTCUSDT.html")
    finally:
        browser.close()
        pw.stop()
    assert seen["dialogs"] == [] and seen["errors"] == [] and seen["failed"] == []


def test_start_report_runs_in_the_background(kline_files, tmp_path):
    from quantlab.reports import start_report

    job = start_report(out=tmp_path / "bg.html", y="ETHUSDT", x="BTCUSDT", files=kline_files,
                       params={"window": 60, "ledger_path": str(tmp_path / "ledger.sqlite")})
    assert job.poll() is None  # returns at once while the process runs
    outcome = wait_until(job.poll, timeout=180, interval=0.2, message="the background report")
    assert outcome.ok and outcome.html.exists() and outcome.headline["n_bars"] == N_BARS
    with pytest.raises(ConfigError):
        start_report(out=tmp_path / "x.html", y="ETHUSDT", x="BTCUSDT", files=kline_files,
                     params={"windw": 1})


def test_run_report_from_inside_a_running_kernel(kline_files, tmp_path):
    """A notebook kernel calls run_report: nbclient starts a nested kernel."""
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from quantlab.reports import run_report\n"
        f"o = run_report(out={str(tmp_path / 'inner.html')!r}, y='ETHUSDT', x='BTCUSDT', "
        f"files={kline_files!r}, params={{'window': 60, 'ledger_path': {str(tmp_path / 'l.sqlite')!r}}})\n"
        "assert o.ok, o.error\nprint(o.headline['verdict'])")]
    src = tmp_path / "outer.ipynb"
    nbformat.write(nb, src)
    pm.execute_notebook(str(src), str(tmp_path / "outer-out.ipynb"), progress_bar=False, log_output=False)
    assert (tmp_path / "inner.html").stat().st_size > 100_000
    assert json.loads((tmp_path / "inner.json").read_text())["headline"]["n_bars"] == N_BARS


def test_failing_report_keeps_the_notebook_and_says_one_line(kline_files, tmp_path, capsys):
    out = tmp_path / "bad.html"
    code = main(["report", "--files", *kline_files, "--y", "ETHUSDT", "--x", "SOLUSDT", "--out", str(out)])
    assert code == 2
    line = _one_line_error(capsys)
    assert "unknown symbol 'SOLUSDT'" in line and "bad.failed.ipynb" in line
    assert (tmp_path / "bad.failed.ipynb").exists() and not out.exists()


def test_report_on_real_bars(shared_data, tmp_path):
    folder = shared_data / "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"
    out = tmp_path / "real.html"
    code = main(["report", "--files", str(folder), "--y", "BTCUSDT", "--x", "ETHUSDT",
                 "--start", "2023-03-01", "--end", "2023-03-08", "-p", "window", "120",
                 "-p", "ledger_path", str(tmp_path / "ledger.sqlite"), "--out", str(out)])
    assert code == 0
    h = json.loads(out.with_suffix(".json").read_text())["headline"]
    assert h["n_bars"] == 7 * 1440 and h["causality_passed"]
    assert 10 < h["hedge_ratio"] < 30  # BTC ~ 15-20x ETH in March 2023


# --- scans: the scan notebook as a report, and a batch from a scan's selection ----------------
@pytest.fixture(scope="module")
def scan_table(kline_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("scan") / "scan.csv"
    code = main(["scan", "--files", *kline_files, "--symbols", "BTCUSDT,ETHUSDT,AVAXUSDT",
                 "--timeframe", "1m", "--formation", "2024-01-01T00:00/2024-01-02T08:00",
                 "--evaluation", "2024-01-02T08:00/2024-01-03T02:00", "--workers", "1",
                 "--no-ledger", "--out", str(out)])
    assert code == 0
    return out


def test_pairs_from_a_scan_are_its_selected_pairs(scan_table, tmp_path):
    from quantlab.reports.runner import pairs_from_scan

    table = pd.read_csv(scan_table)
    selected = {(r.y, r.x) for r in table.itertuples() if str(r.selected).lower() == "true"}
    pairs = pairs_from_scan(scan_table)
    assert set(pairs) == selected and {frozenset(p) for p in pairs} == {frozenset(("ETHUSDT", "BTCUSDT"))}
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="missing: y, x, selected"):
        pairs_from_scan(bad)


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Chromium not installed at /usr/bin/chromium")
def test_scan_notebook_renders_as_an_offline_report(kline_files, tmp_path):
    out = tmp_path / "scan.html"
    code = main(["report", "--notebook", "pair_scan", "--files", *kline_files, "--timeframe", "1m",
                 "-p", "symbols", "BTCUSDT,ETHUSDT,AVAXUSDT",
                 "-p", "formation", "2024-01-01T00:00/2024-01-02T08:00",
                 "-p", "evaluation", "2024-01-02T08:00/2024-01-03T02:00", "--out", str(out)])
    assert code == 0
    # core BokehJS inline once (~1.3 MB), not every bundle (~4 MB)
    assert out.stat().st_size < 2_500_000, out.stat().st_size
    pw, browser, page, seen = _open_offline(out)
    try:
        page.wait_for_function("window.Bokeh && Bokeh.documents && Bokeh.documents.length >= 1",
                               timeout=30_000)
        wait_until(lambda: page.locator(".bk-Canvas").count() >= 1, timeout=30, message="the heatmap")
        assert page.locator(".jp-CodeCell .jp-InputArea").count() == 0  # markdown stays, code goes
    finally:
        browser.close()
        pw.stop()
    assert seen["errors"] == [] and seen["failed"] == [] and seen["blocked"] == []


def test_lookback_keeps_the_last_span_and_provenance_counts_bars(kline_files):
    from quantlab.reports.data import load_report_data

    p = rp.validate_parameters({"files": kline_files, "symbol_y": "ETHUSDT", "symbol_x": "BTCUSDT",
                                "lookback": "12h"})
    aligned, prov = load_report_data(p)
    assert len(aligned) == 12 * 60 and aligned.index[-1] == pd.Timestamp("2024-01-01", tz="UTC") + \
        pd.Timedelta(minutes=N_BARS - 1)
    assert prov["n_bars"] == prov["grid_bars"] == 720 and prov["missing_bars"] == 0
    assert prov["versions"]["quantlab"] and "carried" in prov["gap_policy"]


@pytest.mark.parametrize("argv, field", [
    (["--pairs", "ETHUSDT/BTCUSDT"], "out-dir"),
    (["--pairs", "ETHUSDT", "--out-dir", "d"], "pairs"),
    (["--y", "ETHUSDT", "--x", "BTCUSDT"], "out"),
    (["--y", "ETHUSDT", "--x", "BTCUSDT", "--out", "r.pdf"], "out"),
    (["--pairs-from", "missing.csv", "--out-dir", "d"], "pairs-from"),
])
def test_report_usage_errors_exit_2(kline_files, tmp_path, capsys, monkeypatch, argv, field):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--files", *kline_files, *argv]) == 2
    assert field in _one_line_error(capsys)
