"""The trial ledger on real SQLite files: identity (same trial counted once), the family
rule, forgetting recorded, several processes recording at once, and the CLI: backtest
summaries carry n_trials/dsr, `quantlab ledger` lists/exports/forgets."""
from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from quantlab.cli import main
from quantlab.errors import ConfigError
from quantlab.ledger import (LEDGER_ENV, Ledger, LedgerError, Trial, bars_digest, canonical_json,
                             default_ledger_path, pair_name)

DAY_MS = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01


def trial(**kw) -> Trial:
    base = dict(kind="backtest", y="AAAUSDT", x="BBBUSDT", timeframe="1m", start_ms=T0,
                end_ms=T0 + DAY_MS, data_hash="d" * 64, params={"window": 60, "entry": 2.0},
                sharpe=0.02, n_obs=1439, skew=0.1, kurtosis=4.0)
    base.update(kw)
    return Trial(**base)


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


# --- identity --------------------------------------------------------------------------------
def test_same_trial_twice_is_counted_once(ledger):
    a = ledger.record(trial())
    b = ledger.record(trial(params={"entry": 2, "window": 60}))  # same params, other spelling
    assert a.is_new and not b.is_new
    assert a.trial_id == b.trial_id and b.n_seen == 2 and (b.k, b.n) == (1, 1)
    c = ledger.record(trial(params={"window": 60, "entry": 2.5}))
    assert c.is_new and (c.k, c.n) == (2, 2)
    d = ledger.record(trial(data_hash="e" * 64))  # same evaluation, other data: a new trial
    assert d.is_new and d.n == 3
    e = ledger.record(trial(y="BBBUSDT", x="AAAUSDT"))  # the other ordering is another trial
    assert e.is_new and e.n == 4
    rec = ledger.get(a.trial_id)
    assert rec.n_seen == 2 and rec.last_seen_ms >= rec.first_seen_ms
    assert rec.params == {"entry": 2, "window": 60} and rec.pair == "AAAUSDT/BBBUSDT"
    assert len(ledger.trials()) == 4
    # the raw file: one row per trial, WAL mode
    con = sqlite3.connect(ledger.path)
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 4
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_bars_digest_is_a_function_of_the_bars_only():
    idx = pd.date_range("2024-01-01", periods=50, freq="1min", tz="UTC")
    rng = np.random.default_rng(0)
    a = pd.DataFrame({"y_open": rng.random(50), "y_close": rng.random(50),
                      "x_open": rng.random(50), "x_close": rng.random(50),
                      "y_is_empty": False}, index=idx)
    a.attrs.update(y="AAAUSDT", x="BBBUSDT", db="/somewhere")
    b = a[["x_close", "y_close", "x_open", "y_open"]].copy()  # other column order, no attrs
    b.attrs.clear()
    assert bars_digest(a) == bars_digest(b) and len(bars_digest(a)) == 64
    c = a.copy()
    c.iloc[10, 1] += 1e-9
    assert bars_digest(c) != bars_digest(a)
    assert bars_digest(a.iloc[1:]) != bars_digest(a)
    assert bars_digest(a.tz_convert("Europe/Berlin")) == bars_digest(a)
    with pytest.raises(ConfigError):
        bars_digest(a[["y_open"]])
    assert canonical_json({"b": np.float64(2.0), "a": [np.int64(1), np.nan]}) == '{"a":[1,null],"b":2}'


def test_trial_from_bars_and_bad_input():
    idx = pd.date_range("2024-01-01", periods=10, freq="5min", tz="UTC")
    bars = pd.DataFrame({"y_close": np.arange(10.0) + 1, "x_close": np.arange(10.0) + 2}, index=idx)
    bars.attrs.update(y="AAAUSDT", x="BBBUSDT", timeframe="5m", market="spot", db="/x/live.db")
    t = Trial.from_bars(bars, kind="scan", params={"window": 5}, pvalue=0.03)
    assert (t.start_ms, t.end_ms) == (T0, T0 + 10 * 300_000)
    assert t.market == "spot" and t.n_bars == 10 and t.source == "/x/live.db"
    assert t.data_hash == bars_digest(bars)
    for bad in (dict(kind="guess"), dict(x="AAAUSDT"), dict(end_ms=T0), dict(pvalue=1.5)):
        with pytest.raises(ConfigError):
            trial(**bad)
    assert pair_name("zzz", "AAA") == "AAA/ZZZ"


# --- families --------------------------------------------------------------------------------
def test_family_rule(ledger):
    base = ledger.record(trial())
    ledger.record(trial(y="BBBUSDT", x="AAAUSDT"))                         # other ordering: in
    ledger.record(trial(params={"window": 90}, start_ms=T0 + DAY_MS // 2,  # overlapping: in
                        end_ms=T0 + 2 * DAY_MS, data_hash="f" * 64))
    ledger.record(trial(params={"window": 30}, start_ms=T0 + DAY_MS,       # touching only: out
                        end_ms=T0 + 2 * DAY_MS, data_hash="a" * 64))
    ledger.record(trial(timeframe="5m"))                                   # other timeframe: out
    ledger.record(trial(x="CCCUSDT"))                                      # other pair: out
    ledger.record(trial(market="usdm"))                                    # other market: out
    scans = ledger.record_many([trial(kind="scan", sharpe=None, n_obs=None, skew=None,
                                      kurtosis=None, pvalue=p, params={"window": w})
                                for w, p in ((60, 0.001), (120, 0.04), (240, 0.3))])
    assert [(r.k, r.n, r.basis) for r in scans] == [(1, 3, "test"), (2, 3, "test"), (3, 3, "test")]
    fam = ledger.family(base)
    assert [r.trial_id for r in fam] == [1, 2, 3]
    assert ledger.family(base, basis="all")[-1].kind == "scan" and len(
        ledger.family(base, basis="all")) == 6
    # trial 3 (half a day to two days) sees trials 1, 2 and the one touching 1 on the right
    assert [r.trial_id for r in ledger.family(3)] == [1, 2, 3, 4]
    assert_allclose(ledger.family_sharpes(base), [0.02, 0.02, 0.02])
    pv = ledger.family_pvalues(scans[0])
    from statsmodels.stats.multitest import multipletests
    assert_allclose(pv["adjusted"], multipletests([0.001, 0.04, 0.3], method="fdr_by")[1])
    assert ledger.adjusted_pvalue(scans[1]) == pytest.approx(pv["adjusted"].iloc[1])
    latest = ledger.latest("BBBUSDT/AAAUSDT", kind="scan")
    assert latest.trial_id == scans[-1].trial_id and latest.pvalue == 0.3
    assert ledger.latest("AAAUSDT/ZZZUSDT") is None


def test_deflate_uses_family_size_and_sharpe_variance(ledger):
    from quantlab.analytics import deflated_sharpe_ratio

    rng = np.random.default_rng(4)
    sharpes = rng.normal(0, 0.02, 20)
    refs = ledger.record_many([trial(params={"i": i}, sharpe=float(s)) for i, s in enumerate(sharpes)])
    assert [r.k for r in refs] == list(range(1, 21)) and {r.n for r in refs} == {20}
    d = ledger.deflate(refs[7])
    expect = deflated_sharpe_ratio(sharpes[7], n_obs=1439, n_trials=20,
                                   sharpe_variance=np.var(sharpes, ddof=1), skew=0.1, kurtosis=4.0)
    assert d.n_trials == 20 and d.k == 8
    assert d.dsr == pytest.approx(expect.dsr) and d.expected_max_sharpe == pytest.approx(
        expect.expected_max_sharpe)
    ref, d2 = ledger.record_and_deflate(trial(params={"i": 7}, sharpe=float(sharpes[7])))
    assert ref.trial_id == refs[7].trial_id and d2.dsr == pytest.approx(d.dsr)
    never = ledger.record(trial(params={"i": "flat"}, sharpe=None, n_obs=None))
    assert ledger.deflate(never).dsr is None and ledger.deflate(never).n_trials == 21


# --- forgetting --------------------------------------------------------------------------------
def test_forget_is_recorded_and_nothing_is_deleted(ledger):
    refs = ledger.record_many([trial(params={"i": i}) for i in range(3)])
    event = ledger.forget([refs[1].trial_id], reason="bars had a bad print", user="tester")
    assert [r.trial_id for r in ledger.trials()] == [refs[0].trial_id, refs[2].trial_id]
    assert len(ledger.trials(include_forgotten=True)) == 3
    assert ledger.get(refs[1].trial_id).forgotten_event == event
    assert ledger.deflate(refs[0]).n_trials == 2
    ev = ledger.events()
    assert ev[-1]["action"] == "forget" and ev[-1]["trial_ids"] == [refs[1].trial_id]
    assert ev[-1]["reason"] == "bars had a bad print" and ev[-1]["user"] == "tester"
    with pytest.raises(LedgerError, match="no trial"):
        ledger.forget([99], reason="typo")
    with pytest.raises(LedgerError, match="already forgotten"):
        ledger.forget([refs[1].trial_id], reason="again")
    with pytest.raises(ConfigError):
        ledger.forget([refs[0].trial_id], reason=" ")
    again = ledger.record(trial(params={"i": 1}))  # tried again: back, and logged
    assert again.trial_id == refs[1].trial_id and again.n == 3
    assert ledger.events()[-1]["action"] == "reinstate"


# --- several processes -------------------------------------------------------------------------
def _worker(path: str, wid: int, barrier) -> None:
    led = Ledger(path, busy_timeout_s=60)
    barrier.wait(timeout=60)
    for i in range(0, 30, 3):  # ten short transactions each, interleaved with the others
        led.record_many([trial(params={"w": wid, "i": j}) for j in range(i, i + 3)])
        led.record(trial(params={"shared": i // 3}))  # every process records these ten
    led.close()


def test_several_processes_record_concurrently(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    Ledger(path).close()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_worker, args=(path, w, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with Ledger(path) as led:
        recs = led.trials()
        assert len(recs) == 4 * 30 + 10
        shared = [r for r in recs if "shared" in r.params]
        assert len(shared) == 10 and {r.n_seen for r in shared} == {4}
        assert len({r.trial_key for r in recs}) == len(recs)
        assert led.deflate(recs[0]).n_trials == 130


# --- CLI ---------------------------------------------------------------------------------------
def _kline_folder(folder, symbol, closes):
    folder.mkdir(parents=True, exist_ok=True)
    t = T0 + 60_000 * np.arange(len(closes))
    pd.DataFrame({"open_time": t, "open": closes, "high": closes * 1.0005, "low": closes * 0.9995,
                  "close": closes, "volume": 10.0, "close_time": t + 59_999,
                  "quote_volume": closes * 10, "count": 100, "taker_buy_volume": 5.0,
                  "taker_buy_quote_volume": closes * 5, "ignore": 0}
                 ).to_csv(folder / f"{symbol}-1m-2024-01-01.csv", index=False)


@pytest.fixture
def pair_folder(tmp_path):
    rng = np.random.default_rng(9)
    n = 1440
    x = 100 + np.cumsum(rng.normal(0, 0.2, n))
    ou = np.zeros(n)
    for i in range(1, n):
        ou[i] = 0.9 * ou[i - 1] + rng.normal(0, 0.3)
    folder = tmp_path / "klines"
    _kline_folder(folder, "AAAUSDT", 5 + 2 * x + ou)
    _kline_folder(folder, "BBBUSDT", x)
    return folder


def _backtest(folder, tmp_path, *extra):
    out = {k: tmp_path / f"{k}.{'json' if k == 'summary' else 'csv'}"
           for k in ("trades", "equity", "summary")}
    rc = main(["backtest", "--files", str(folder), "--y", "AAAUSDT", "--x", "BBBUSDT",
               "--window", "60", "--trades", str(out["trades"]), "--equity", str(out["equity"]),
               "--summary", str(out["summary"]), *extra])
    assert rc == 0
    return json.loads(out["summary"].read_text())


def test_cli_backtest_summary_carries_n_trials_and_dsr(pair_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(LEDGER_ENV, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)  # the ledger goes where one works, not beside data only read
    s1 = _backtest(pair_folder, tmp_path)
    assert s1["ledger"] == str(project / "ledger.sqlite")
    assert not (pair_folder / "ledger.sqlite").exists()
    assert not (pair_folder.parent / "ledger.sqlite").exists()
    assert (s1["n_trials"], s1["trial_k"]) == (1, 1) and 0.0 <= s1["dsr"] <= 1.0
    assert s1["sharpe_per_bar"] * np.sqrt(s1["bars_per_year"]) == pytest.approx(s1["sharpe"])
    assert "trial 1 of 1 in this family; deflated Sharpe" in capsys.readouterr().out
    s2 = _backtest(pair_folder, tmp_path)                       # the same run: the same trial
    assert (s2["n_trials"], s2["trial_id"]) == (1, s1["trial_id"])
    s3 = _backtest(pair_folder, tmp_path, "--entry-z", "1.5")   # another hypothesis
    assert (s3["n_trials"], s3["trial_k"]) == (2, 2)
    led = tmp_path / "elsewhere.sqlite"
    s4 = _backtest(pair_folder, tmp_path, "--ledger", str(led))
    assert s4["n_trials"] == 1 and s4["ledger"] == str(led)
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "env.sqlite"))
    assert default_ledger_path(db="/x/y.db") == tmp_path / "env.sqlite"
    assert _backtest(pair_folder, tmp_path)["ledger"] == str(tmp_path / "env.sqlite")
    with Ledger(project / "ledger.sqlite") as ledger:
        rec = ledger.get(s1["trial_id"])
        assert rec.kind == "backtest" and rec.params["entry"] == 2.0 and rec.params["window"] == 60
        assert rec.n_seen == 2 and rec.stats["n_trades"] == s1["n_trades"]


def test_cli_ledger_lists_exports_and_forgets(ledger, capsys):
    ledger.record_many([trial(params={"i": i}) for i in range(3)] +
                       [trial(kind="scan", x="CCCUSDT", sharpe=None, pvalue=0.01)])
    path = str(ledger.path)
    assert main(["ledger", "--ledger", path]) == 0
    out = capsys.readouterr().out
    assert "AAAUSDT~BBBUSDT" in out and "4 trial(s)" in out
    assert main(["ledger", "--ledger", path, "--json", "--pair", "BBBUSDT/AAAUSDT"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["trial_id"] for t in data["trials"]] == [1, 2, 3] and data["events"] == []
    assert data["trials"][0]["params"] == {"i": 0} and data["trials"][0]["start"].startswith("2024")
    assert main(["ledger", "--ledger", path, "--json", "--kind", "scan"]) == 0
    assert [t["kind"] for t in json.loads(capsys.readouterr().out)["trials"]] == ["scan"]
    assert main(["ledger", "--ledger", path, "--json", "--since", "2999-01-01"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == []
    assert main(["ledger", "forget", "2", "3", "--reason", "wrong fees", "--ledger", path]) == 0
    assert "forgot trial(s) 2, 3" in capsys.readouterr().out
    assert main(["ledger", "--ledger", path, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["trial_id"] for t in data["trials"]] == [1, 4]
    assert data["events"][0]["reason"] == "wrong fees" and data["events"][0]["trial_ids"] == [2, 3]
    assert main(["ledger", "--ledger", path, "--json", "--all"]) == 0
    assert len(json.loads(capsys.readouterr().out)["trials"]) == 4
    assert main(["ledger", "forget", "42", "--reason", "x", "--ledger", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "no trial(s) 42" in err and len(err.splitlines()) == 1


def test_cli_ledger_bad_input_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(LEDGER_ENV, raising=False)
    assert main(["ledger"]) == 2
    assert "--ledger PATH" in capsys.readouterr().err
    bogus = tmp_path / "not-a-ledger.sqlite"
    con = sqlite3.connect(bogus)
    con.execute("CREATE TABLE t (a)")
    con.execute("PRAGMA user_version = 3")
    con.commit()
    con.close()
    assert main(["ledger", "--ledger", str(bogus)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a quantlab ledger" in err and len(err.splitlines()) == 1


# --- sweeps -------------------------------------------------------------------------------------
def test_record_sweep_records_each_cell_once(ledger):
    from quantlab.analytics import sweep_overfit

    rng = np.random.default_rng(1)
    n = 2000
    x = 100 + np.cumsum(rng.normal(0, 0.2, n))
    ou = np.zeros(n)
    for i in range(1, n):
        ou[i] = 0.95 * ou[i - 1] + rng.normal(0, 0.3)
    idx = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    y = 5 + 2 * x + ou
    aligned = pd.DataFrame({"y_open": y, "y_close": y, "x_open": x, "x_close": x}, index=idx)
    aligned.attrs.update(y="AAAUSDT", x="BBBUSDT", timeframe="1m")
    grid = dict(entries=[1.0, 2.0], exits=[0.0, 0.5], windows=[60, 120])
    ov = sweep_overfit(aligned, **grid)
    table = ledger.record_sweep(aligned, ov, params={"hedge": "rolling-ols"})
    assert len(table) == 8 and set(table["n_trials"]) == {8}
    assert list(table["trial_k"]) == list(range(1, 9))
    again = ledger.record_sweep(aligned, ov, params={"hedge": "rolling-ols"})
    assert list(again["trial_id"]) == list(table["trial_id"]) and set(again["n_trials"]) == {8}
    assert_allclose(table["dsr"], ov.table["dsr"], rtol=1e-9)  # same N and V[SR] here
    rec = ledger.get(int(table["trial_id"].iloc[0]))
    assert rec.kind == "sweep_cell" and rec.params["window"] == 60 and rec.params["hedge"] == "rolling-ols"


# --- the monitor's formation-vs-live prediction ---------------------------------------------
def _ou_pair(n, phi, seed, sd=0.3):
    rng = np.random.default_rng(seed)
    x = 100 + np.cumsum(rng.normal(0, 0.2, n))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = phi * s[i - 1] + rng.normal(0, sd)
    return 5 + 2 * x + s, x, s


def _formation_stats(y, x):
    from quantlab.analytics import half_life

    b, a = np.polyfit(x, y, 1)
    s = y - a - b * x
    return {"hedge_ratio": b, "intercept": a, "spread_mean": s.mean(), "spread_std": s.std(ddof=1),
            "half_life_bars": half_life(s).half_life, "coint_pvalue": 0.001}


def test_prediction_against_live_data(ledger):
    from quantlab.ui.prediction import Prediction, check_prediction, latest_prediction

    y, x, _ = _ou_pair(3000, 0.95, 1)
    stats = _formation_stats(y[:2000], x[:2000])
    ledger.record(trial(kind="scan", y="AAAUSDT", x="BBBUSDT", sharpe=None, pvalue=0.001,
                        stats=stats))
    ledger.record(trial(kind="backtest", params={"other": 1}))  # not a prediction
    pred = latest_prediction(ledger, "BBBUSDT", "AAAUSDT")       # either ordering on screen
    assert pred is not None and pred.kind == "scan" and pred.has_band
    assert pred.half_life_s == pytest.approx(stats["half_life_bars"] * 60)
    live = {"AAAUSDT": y[2000:], "BBBUSDT": x[2000:]}
    ok = check_prediction(pred, live, bar_seconds=60)
    assert ok.status == "ok" and ok.warnings == () and ok.share_outside < 0.05
    assert ok.live_half_life_s == pytest.approx(pred.half_life_s, rel=0.6)
    # the relationship breaks: the spread drifts away and stops reverting
    yb = y[2000:] + np.cumsum(np.full(1000, 0.05))
    broken = check_prediction(pred, {"AAAUSDT": yb, "BBBUSDT": x[2000:]}, bar_seconds=60)
    assert broken.status == "outside" and broken.spread_z > 3
    assert any("outside the predicted" in w for w in broken.warnings)
    assert any("half-life" in w or "not mean-reverting" in w for w in broken.warnings)
    # live bars of another size: half-lives compare in seconds (1 s bars: 60x shorter)
    fast = check_prediction(pred, live, bar_seconds=1)
    assert any("half-life" in w for w in fast.warnings)
    assert check_prediction(pred, {k: v[:10] for k, v in live.items()}, bar_seconds=60
                            ).status == "warming up"
    assert check_prediction(None, live, bar_seconds=60).status == "no prediction"
    assert Prediction.from_record(ledger.get(2)) is None


def test_prediction_panel_renders_and_survives_a_missing_ledger(ledger, tmp_path):
    pytest.importorskip("ipywidgets")
    from quantlab.ui.prediction import PredictionPanel

    y, x, _ = _ou_pair(1500, 0.95, 2)
    ledger.record(trial(kind="report", sharpe=None, stats=_formation_stats(y[:1000], x[:1000])))
    panel = PredictionPanel(ledger.path, "AAAUSDT", "BBBUSDT")
    check = panel.update({"AAAUSDT": y[1000:] + 50, "BBBUSDT": x[1000:]}, 60)
    assert check.status == "outside"
    assert "formation vs live" in panel.widget.value and "outside the predicted" in panel.widget.value
    assert "report trial 1" in panel.widget.value
    none = PredictionPanel(tmp_path / "absent.sqlite", "AAAUSDT", "BBBUSDT")
    assert none.update({"AAAUSDT": y, "BBBUSDT": x}, 60).status == "no prediction"
    assert "no report or scan" in none.widget.value
