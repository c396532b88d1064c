"""HTML of a pair report's header and tables. Pure string building.

Every value taken from data or parameters (symbols, rule text, file names,
error messages) goes through :func:`html.escape`: a symbol named
``<script>alert(1)</script>`` is shown as text and runs nothing.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["header_html", "tests_html", "backtest_html", "trades_html", "alerts_html",
           "honesty_html", "fmt", "STYLE"]

STYLE = """<style>
.ql-report { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 13px; }
.ql-report h1 { font-size: 20px; margin: 4px 0; } .ql-report h2 { font-size: 16px; margin: 14px 0 4px; }
.ql-report table { border-collapse: collapse; margin: 4px 0 10px; }
.ql-report table th, .ql-report table td { border: 1px solid #ddd; padding: 2px 8px; text-align: left !important; }
.ql-report table th { background: #f4f4f4; }
.ql-report table td.num { text-align: right !important; font-variant-numeric: tabular-nums; }
.ql-verdict { font-size: 15px; font-weight: 600; padding: 6px 10px; background: #eef5ff; border-left: 4px solid #1f77b4; }
.ql-pass { color: #1a7f37; } .ql-fail { color: #cf222e; font-weight: 600; }
.ql-note { color: #555; font-size: 12px; } .ql-mono { font-family: monospace; font-size: 12px; }
</style>"""


def e(value: Any) -> str:
    """Escaped text of any value."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table: ``n/a`` for None/NaN, ``inf`` kept, ints with separators."""
    if value is None or value is pd.NA:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.{digits}g}"
        return f"{v:,.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _kv_table(rows: Iterable[tuple[str, Any]], caption: str | None = None) -> str:
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v if isinstance(v, str) else fmt(v))}</td></tr>"
                   for k, v in rows)
    cap = f"<caption style='text-align:left'><b>{e(caption)}</b></caption>" if caption else ""
    return f"<table>{cap}{body}</table>"


def _kv_grid(rows: list[tuple[str, Any]], per_row: int = 3) -> str:
    """Key/value pairs laid out ``per_row`` to a table row (compact parameter lists)."""
    cells = [f"<th>{e(k)}</th><td>{e(v if isinstance(v, str) else fmt(v))}</td>" for k, v in rows]
    body = "".join("<tr>" + "".join(cells[i:i + per_row]) + "</tr>"
                   for i in range(0, len(cells), per_row))
    return f"<table>{body}</table>"


def _frame_table(frame: pd.DataFrame, caption: str | None = None) -> str:
    head = "".join(f"<th>{e(c)}</th>" for c in frame.columns)
    rows = []
    for rec in frame.itertuples(index=False):
        cells = []
        for v in rec:
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            cells.append(f"<td class='num'>{e(fmt(v))}</td>" if num else f"<td>{e(fmt(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption style='text-align:left'><b>{e(caption)}</b></caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _stamp(passed: bool, text: str) -> str:
    cls = "ql-pass" if passed else "ql-fail"
    mark = "&#10004;" if passed else "&#10008;"
    return f"<div class='{cls}'>{mark} {e(text)}</div>"


def header_html(study: Any, provenance: Mapping[str, Any], trial_line: str | None = None) -> str:
    """Title, verdict, honesty stamps, parameters, data used, input hash, versions."""
    p = study.params
    title = p.title or f"Pair report: {p.symbol_y} / {p.symbol_x}, {p.timeframe} bars"
    prov = provenance
    gaps = prov.get("store_gaps") or []
    by_status: dict[str, int] = {}
    for g in gaps:
        by_status[g["status"]] = by_status.get(g["status"], 0) + 1
    gap_text = (", ".join(f"{v} {k}" for k, v in sorted(by_status.items())) if gaps
                else ("none recorded" if p.db_path else "not recorded for files"))
    lag = study.lag
    lag_ok = not (lag.sharpe is not None and lag.sharpe_lagged is not None
                  and math.isfinite(lag.sharpe) and lag.sharpe > 0 and lag.sharpe_lagged < 0)
    params_rows = [(k, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else
                    ("None" if v is None else v)) for k, v in p.as_dict().items()
                   if k not in ("summary_path",)]
    data_rows = [
        ("symbols", f"y = {p.symbol_y}, x = {p.symbol_x}"), ("market", prov.get("market")),
        ("source", "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                             for k, v in prov.get("source", {}).items())),
        ("range", f"{prov.get('first_bar')} .. {prov.get('last_bar')} (bar open times, UTC)"),
        ("bars", f"{fmt(prov.get('n_bars'))} of {fmt(prov.get('grid_bars'))} on the {p.timeframe} grid; "
                 f"{fmt(prov.get('missing_bars'))} missing in {fmt(prov.get('holes'))} holes"),
        ("carried bars", f"{p.symbol_y}: {fmt(prov['carried_bars']['y'])}, "
                         f"{p.symbol_x}: {fmt(prov['carried_bars']['x'])}"),
        ("feed gaps in the store", gap_text),
        ("how gaps are handled", prov.get("gap_policy")),
        ("input bars SHA-256", study.digest),
    ]
    versions = ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())
    parts = [
        STYLE, "<div class='ql-report'>",
        f"<h1>{e(title)}</h1>",
        "<p class='ql-note'>Does the spread of y against x mean-revert? In-sample tests over the "
        "whole range, causal per-bar analytics (every value at bar t uses bars up to t) and a "
        "z-score mean-reversion backtest, computed by quantlab from the bars below.</p>",
        f"<div class='ql-verdict'>{e(study.verdict())}</div>",
    ]
    if trial_line:
        parts.append(f"<div class='ql-note'><b>{e(trial_line)}</b></div>")
    parts += [
        _stamp(study.causality.passed, study.causality.line()),
        _stamp(lag_ok, lag.line()),
        "<h2>Parameters</h2>", _kv_grid(params_rows),
        "<h2>Data used</h2>", _kv_table(data_rows),
        f"<p class='ql-note'>Versions: {e(versions)}</p>",
        "</div>",
    ]
    return "".join(parts)


def tests_html(study: Any) -> str:
    """Static OLS fit and the in-sample tests, one row each in the shared vocabulary."""
    fit = study.analysis.static
    t = study.tests
    eg = t["engle_granger"]
    hl = t["half_life"]

    def row(name, r, note=""):
        cv = getattr(r, "critical_values", {}) or {}
        return {"test": name, "stat": getattr(r, "stat", None), "p-value": getattr(r, "pvalue", None),
                "1%": cv.get("1%"), "5%": cv.get("5%"), "10%": cv.get("10%"),
                "nobs": getattr(r, "nobs", None), "lags": getattr(r, "lags", None), "note": note}

    kp = t["kpss"]
    rows = [
        row("ADF of the static spread", t["adf"], "H0: unit root"),
        row("Engle-Granger y on x", eg.y_on_x, "cointegration critical values (MacKinnon)"),
        row("Engle-Granger x on y", eg.x_on_y, "the other ordering"),
        row("Johansen trace, rank 0", t["johansen"], f"rank at 5%: {t['johansen'].rank_trace}; "
                                                     "no p-value"),
        row("KPSS of the static spread", kp, "H0: stationary"
            + (f"; p-value {kp.pvalue_bound} than shown" if kp.pvalue_bound else "")),
        {"test": "Half-life (AR(1) of the static spread)", "stat": hl.half_life, "p-value": None,
         "1%": None, "5%": None, "10%": None, "nobs": getattr(hl, "nobs", None), "lags": None,
         "note": "bars"},
        {"test": "Hurst exponent of the static spread", "stat": t["hurst"].stat, "p-value": None,
         "1%": None, "5%": None, "10%": None, "nobs": getattr(t["hurst"], "nobs", None), "lags": None,
         "note": "< 0.5 mean-reverting"},
    ]
    fit_rows = [("hedge ratio beta", fit.beta), ("intercept alpha", fit.alpha), ("R squared", fit.r2),
                ("residual std", fit.resid_std), ("bars", study.analysis.summary()["n_bars"])]
    return ("<div class='ql-report'><h2>Static fit and tests (in-sample, whole range)</h2>"
            + _kv_table(fit_rows, "Static OLS of y on x with intercept")
            + _frame_table(pd.DataFrame(rows), "Stationarity and cointegration") + "</div>")


_STAT_LABELS = (("total_pnl", "net PnL (quote)"), ("gross_pnl", "gross PnL"), ("fees", "fees"),
                ("break_even_fee_bps", "break-even fee, bps per leg"), ("sharpe", "net Sharpe (annualised)"),
                ("sortino", "Sortino"), ("max_drawdown", "max drawdown (quote)"),
                ("max_drawdown_bars", "max drawdown duration, bars"), ("n_trades", "trades"),
                ("hit_rate", "hit rate"), ("avg_bars_held", "average bars held"),
                ("turnover", "turnover"), ("time_in_market", "time in market"),
                ("capital", "capital base"), ("total_return", "return on capital"))


def backtest_html(study: Any) -> str:
    st = study.stats
    s = study.params
    rows = [(label, st.get(key)) for key, label in _STAT_LABELS if key in st]
    return ("<div class='ql-report'><h2>Backtest</h2>"
            f"<p class='ql-note'>Signals on the close of bar t from the causal z-score; filled on bar "
            f"t+1 ({e(s.fill)}); {e(s.fee_bps)} bps per leg per side, {e(s.slippage_bps)} bps "
            f"slippage; entry |z| > {e(s.z_entry)}, exit at {e(s.z_exit)}"
            f"{', stop at ' + e(s.z_stop) if s.z_stop is not None else ''}. The break-even fee is "
            f"the fee per leg at which net PnL is 0.</p>"
            + _kv_table(rows, "Backtest statistics") + "</div>")


def trades_html(study: Any, limit: int = 25) -> str:
    trades = study.backtest.trades
    cols = ["entry_time", "exit_time", "side", "entry_z", "exit_z", "beta", "gross_pnl", "fees",
            "net_pnl", "bars_held", "exit_reason"]
    n = len(trades)
    if n == 0:
        return "<div class='ql-report'><h2>Trades</h2><p>No trades.</p></div>"
    shown = trades[cols] if n <= 2 * limit else pd.concat([trades[cols].head(limit),
                                                           trades[cols].tail(limit)])
    note = (f"all {n:,} trades" if n <= 2 * limit
            else f"first and last {limit} of {n:,} trades (the CLI's --trades CSV has them all)")
    return f"<div class='ql-report'><h2>Trades</h2>{_frame_table(shown.astype(object), note)}</div>"


def alerts_html(study: Any, limit: int = 100) -> str:
    ev = study.alerts
    rules = ", ".join(study.params.alert_rules) or "none"
    if len(ev) == 0:
        return (f"<div class='ql-report'><h2>Alerts</h2><p>Rules: {e(rules)}. "
                f"They would not have fired.</p></div>")
    cols = [c for c in ("time", "rule", "value", "threshold", "message") if c in ev.columns]
    counts = ev.groupby("rule").size()
    summary = "; ".join(f"{r}: {c:,} times" for r, c in counts.items())
    shown = ev[cols].head(limit)
    note = f"first {min(limit, len(ev))} of {len(ev):,} events"
    return (f"<div class='ql-report'><h2>Alerts the rules would have fired</h2>"
            f"<p>Rules: {e(rules)}. {e(summary)}.</p>{_frame_table(shown.astype(object), note)}</div>")


def honesty_html(study: Any) -> str:
    c = study.causality
    lag = study.lag
    cut_rows = [("cuts (bars kept)", ", ".join(f"{v:,}" for v in c.cuts) or "none"),
                ("per-bar columns compared", c.columns),
                ("largest difference", c.max_abs_diff),
                ("backtest equity compared", c.equity_checked),
                ("differences", ", ".join(c.failures) or "none")]
    lag_rows = [("net Sharpe as specified", lag.sharpe), ("net Sharpe, one extra bar of delay", lag.sharpe_lagged),
                ("net PnL as specified", lag.total_pnl), ("net PnL, one extra bar of delay", lag.total_pnl_lagged),
                ("trades", f"{lag.n_trades:,} / {lag.n_trades_lagged:,}")]
    return ("<div class='ql-report'><h2>Honesty stamps (computed in this run)</h2>"
            + _stamp(c.passed, c.line()) + _kv_table(cut_rows, "Causality check")
            + _kv_table(lag_rows, "Lag check") + "</div>")
