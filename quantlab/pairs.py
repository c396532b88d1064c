"""Entry points over a pair: load it from the store or from files, run the
analytics or the backtest, write the outputs. Used by the CLI and by notebooks
(a papermill report in another process calls :func:`load_pair_bars` on the same
SQLite file the ingester writes, then the same pure analytics).

This module does I/O (reads the store and files, writes outputs); the
statistics live in the pure modules it calls.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, DataFileError, InsufficientData, UnknownSymbol

logger = logging.getLogger(__name__)


def parse_time_ms(value: str | None, field: str) -> int | None:
    """ISO-8601 (UTC when no offset) or epoch ms -> ms since epoch; None stays None.

    >>> parse_time_ms("2022-01-01", "start")
    1640995200000
    >>> parse_time_ms("2022-01-01T00:01:00+00:00", "start")
    1640995260000
    """
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(field, value, "an ISO-8601 time such as 2023-03-01 or 2023-03-01T12:00Z") from exc
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.tz_convert("UTC").value // 1_000_000)


def _leg_bars_from_loaded(loaded: Any, timeframe: str, start_ms: int | None,
                          end_ms: int | None) -> pd.DataFrame:
    from quantlab import bars

    if loaded.is_bars:
        frame = loaded.frame
        if start_ms is not None:
            frame = frame[frame.index >= pd.Timestamp(start_ms, unit="ms", tz="UTC")]
        if end_ms is not None:
            frame = frame[frame.index < pd.Timestamp(end_ms, unit="ms", tz="UTC")]
        if len(frame) >= 2:
            step = int((frame.index[1:] - frame.index[:-1]).min() / pd.Timedelta(milliseconds=1))
            if bars.parse_timeframe(timeframe) < step:
                raise ConfigError("timeframe", timeframe,
                                  f"at least the files' bar size ({step // 1000} s): bars cannot be split")
        return bars.aggregate_bars(frame, timeframe, start_ms=start_ms, end_ms=end_ms)
    return bars.resample_trades(loaded.frame, timeframe, start_ms=start_ms, end_ms=end_ms)


def load_pair_bars(*, y: str, x: str, timeframe: str = "1m", db: str | Path | None = None,
                   files: Sequence[str | Path] | None = None,
                   archive: str | Path | None = None, market: str | None = None,
                   start: str | int | None = None, end: str | int | None = None,
                   max_carry_bars: int = 5) -> pd.DataFrame:
    """Bars of two symbols aligned on time, from a tick store, files or a Parquet archive.

    Parameters
    ----------
    y, x : symbols of the dependent and independent legs.
    timeframe : bar size (``"1s"``, ``"1m"``, ``"5m"`` ...).
    db : SQLite file written by ``quantlab ingest`` / ``quantlab import``.
    files : any files :func:`quantlab.files.load_files` reads (trades, aggTrades,
        klines, OHLC CSV, NDJSON, captures), for both legs.
    archive : folder written by ``quantlab archive``; only the day partitions
        in ``[start, end)`` are read (:func:`quantlab.archive.read_bars`;
        larger timeframes aggregated from the archived 1 m or 1 s bars).
        Exactly one of ``db``, ``files``, ``archive``.
    market : ``"spot"`` or ``"usdm"``, when the store or files hold both.
    start, end : ISO-8601 UTC or epoch ms; ``[start, end)``.
    max_carry_bars : a leg that did not trade keeps its last close this many
        bars; beyond that the row is a gap and is dropped.

    Returns
    -------
    DataFrame
        :func:`quantlab.bars.align_pair` output without gap rows, indexed by
        ``open_time`` (UTC); ``attrs`` say where it came from.
    """
    from quantlab import bars

    if sum(v is not None for v in (db, files, archive)) != 1:
        raise ConfigError("source", {"db": db, "files": files, "archive": archive},
                          "exactly one of db=, files= or archive=")
    y, x = y.upper(), x.upper()
    if y == x:
        raise ConfigError("x", x, "a symbol different from y")
    start_ms, end_ms = parse_time_ms(start, "start"), parse_time_ms(end, "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError("end", end, f"a time after start ({start})")
    bars.parse_timeframe(timeframe)
    if db is not None:
        from quantlab.store import TickStore

        if not Path(db).exists():
            raise ConfigError("db", str(db), "an existing SQLite file written by quantlab ingest/import")
        with TickStore(db, read_only=True) as store:
            legs = [store.bars(s, timeframe, market=market, start_ms=start_ms, end_ms=end_ms)
                    for s in (y, x)]
        origin = {"db": str(db)}
    elif archive is not None:
        from quantlab.archive import read_bars

        # align_pair re-creates empty bars itself: skip them at the archived timeframe.
        legs = [read_bars(archive, s, timeframe, market=market, start_ms=start_ms, end_ms=end_ms,
                          explicit_empty=False) for s in (y, x)]
        origin = {"archive": str(archive)}
    else:
        from quantlab.files import load_files

        loaded = load_files(list(files), market=market, start_ms=start_ms, end_ms=end_ms)
        for s in (y, x):
            if s not in loaded:
                raise UnknownSymbol(s, sorted(loaded))
        legs = [_leg_bars_from_loaded(loaded[s], timeframe, start_ms, end_ms) for s in (y, x)]
        origin = {"files": [str(f) for f in files]}
    for s, leg in zip((y, x), legs):
        if not (~leg["is_empty"]).any():
            raise InsufficientData(f"{s} in the selected range", 1, 0)
    aligned = bars.align_pair(legs[0], legs[1], max_carry_bars=max_carry_bars, timeframe=timeframe,
                              drop_gaps=True)
    aligned.attrs.update(y=y, x=x, timeframe=timeframe, market=market, **origin)
    return aligned


# --- CLI handlers ------------------------------------------------------------------
def import_files_cli(args: Any) -> int:
    """``quantlab import FILE ... --db PATH``: ticks go through the same store
    (duplicates ignored), so re-importing is harmless."""
    from quantlab.files import load_file
    from quantlab.store import TickStore

    total_new = total_dup = 0
    store = None  # opened after the first file loads: a bad first file leaves --db untouched
    try:
        for done, path in enumerate(args.files):
            try:
                loaded = load_file(path, symbol=args.symbol, market=args.market)
            except DataFileError as exc:
                if not done:
                    raise
                # Each file is one transaction: say what is already stored.
                raise DataFileError(exc.path, f"{exc.reason}; the {done} file(s) before it were imported, "
                                              "nothing of this one", exc.line, exc.column) from exc
            if loaded.is_bars:
                raise DataFileError(path, f"holds {loaded.format} bars, not trades; the store keeps "
                                    "trades (use `quantlab analyze --files` for bar files)")
            if store is None:
                store = TickStore(args.db)
            result = store.write_trades(loaded.frame)
            total_new += result.inserted
            total_dup += result.duplicates
            notes = "".join(f"; {note}" for note in loaded.notes)  # e.g. rows with price <= 0
            print(f"{path}: {result.inserted} new trades, {result.duplicates} already stored{notes}")
    finally:
        if store is not None:
            store.close()
    print(f"imported {total_new} trades into {args.db} ({total_dup} duplicates ignored)")
    return 0


def clean_json(value: Any) -> Any:
    """Recursively replace NaN/inf by None and numpy scalars by Python ones."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as strict JSON (no NaN) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean_json(payload), indent=2, default=str) + "\n")
    return path


def source_kwargs(args: Any) -> dict:
    """``db=``, ``files=``, ``archive=`` from parsed CLI arguments (the group
    ``quantlab.cli._add_data_source`` adds; exactly one is set)."""
    return {"db": getattr(args, "db", None), "files": getattr(args, "files", None),
            "archive": getattr(args, "archive", None)}


def source_metadata(args: Any) -> dict:
    """The source of a CLI run for output metadata: ``{"db": ...}``,
    ``{"files": [...]}`` or ``{"archive": ...}``."""
    kw = source_kwargs(args)
    if kw["files"] is not None:
        return {"files": [str(f) for f in kw["files"]]}
    return {k: str(v) for k, v in kw.items() if v is not None}


def _pair_from_args(args: Any) -> pd.DataFrame:
    aligned = load_pair_bars(y=args.y, x=args.x, timeframe=args.timeframe, **source_kwargs(args),
                             market=args.market, start=args.start, end=args.end,
                             max_carry_bars=args.max_carry_bars)
    # The still-forming last bar is not final: research outputs use closed bars only.
    if "is_forming" in aligned and len(aligned) and bool(aligned["is_forming"].iloc[-1]):
        aligned = aligned.iloc[:-1]
    return aligned


def _metadata(args: Any, aligned: pd.DataFrame, command: str) -> dict:
    return {
        "command": command, "y": args.y.upper(), "x": args.x.upper(), "timeframe": args.timeframe,
        "window": args.window, "hedge": args.hedge, "log_prices": bool(args.log_prices),
        "source": source_metadata(args),
        "start": aligned.index[0].isoformat() if len(aligned) else None,
        "end": aligned.index[-1].isoformat() if len(aligned) else None,
        "causal_columns": "every per-bar column uses bars up to and including its own",
    }


def run_analysis(aligned: pd.DataFrame, *, window: int, hedge: str = "rolling-ols",
                 log_prices: bool = False, **options: Any):
    """:func:`quantlab.analytics.analyze` on an aligned pair from :func:`load_pair_bars`,
    with the symbols taken from the frame's ``attrs``."""
    from quantlab.analytics import analyze

    symbols = (aligned.attrs.get("y"), aligned.attrs.get("x")) if "y" in aligned.attrs else None
    return analyze(aligned, window=window, hedge=hedge, log_prices=log_prices, symbols=symbols,
                   **options)


def analyze_cli(args: Any) -> int:
    """``quantlab analyze``: per-bar causal analytics to ``--out``, the in-sample
    summary to ``--summary``, replayed alert events to ``--alerts-out``."""
    from quantlab.alerts import parse_rule, replay_alerts
    from quantlab.export import export_frame

    rules = [parse_rule(text) for text in args.alert]  # fail fast on a bad rule
    if rules and not args.alerts_out:
        raise ConfigError("alerts-out", None, "a CSV path when --alert is given")
    aligned = _pair_from_args(args)
    result = run_analysis(aligned, window=args.window, hedge=args.hedge, log_prices=args.log_prices)
    frame = result.frame.copy()
    frame.index.name = "time"
    meta = _metadata(args, aligned, "analyze")
    out = Path(args.out)
    if out.is_dir() or str(args.out).endswith(("/", "\\")):
        # A folder: name the file after what produced it (kind, pair, timeframe, range).
        from quantlab.export import default_filename

        out = out / default_filename(f"analyze-{args.hedge}-w{args.window}", (args.y, args.x),
                                     args.timeframe, frame.index[0], frame.index[-1], "csv")
    path = export_frame(frame, out, metadata=meta)
    summary = result.summary()
    print(f"{len(frame)} bars {meta['start']} .. {meta['end']} -> {path}")
    if args.summary:
        write_json(args.summary, {**summary, "metadata": meta})
        print(f"summary -> {args.summary}: hedge_ratio={summary['hedge_ratio']:.6g} "
              f"adf_pvalue={summary['adf_pvalue']:.4g} coint_pvalue={summary['coint_pvalue']:.4g} "
              f"half_life_bars={summary['half_life_bars']}")
    if rules:
        events = replay_alerts(frame, rules, f"{args.y.upper()}/{args.x.upper()}")
        Path(args.alerts_out).parent.mkdir(parents=True, exist_ok=True)
        events.to_csv(args.alerts_out, index=False)
        print(f"{len(events)} alert events -> {args.alerts_out}")
    return 0


def features_cli(args: Any) -> int:
    """``quantlab features``: the causal feature table of :mod:`quantlab.features`
    (``label_*`` look-ahead columns only with ``--labels``) to ``--out``."""
    from quantlab.export import default_filename, export_frame
    from quantlab.features import FeatureSettings, feature_table, label_columns

    settings = FeatureSettings(window=args.window, horizons=args.horizons, sma_windows=args.sma,
                               ema_spans=args.ema, bb_window=args.bb_window, bb_k=args.bb_k,
                               rsi_window=args.rsi_window, vwap_window=args.vwap_window,
                               hedge=args.hedge, log_prices=args.log_prices, labels=args.labels,
                               label_horizons=args.label_horizons)
    aligned = _pair_from_args(args)
    frame = feature_table(aligned, settings)
    frame.index.name = "time"
    labels = label_columns(frame)
    meta = _metadata(args, aligned, "features")
    meta.update(feature_settings=settings.as_dict(), label_columns=labels,
                causal_columns="every column except label_* uses bars up to and including its own; "
                               "label_* columns look ahead (targets, never inputs)")
    out = Path(args.out)
    if out.is_dir() or str(args.out).endswith(("/", "\\")):
        out = out / default_filename(f"features-w{args.window}", (args.y, args.x), args.timeframe,
                                     frame.index[0], frame.index[-1], "csv")
    path = export_frame(frame, out, metadata=meta)
    print(f"{len(frame)} bars x {frame.shape[1] - len(labels)} features"
          f"{f' + {len(labels)} labels' if labels else ''} {meta['start']} .. {meta['end']} -> {path}")
    return 0


def backtest_cli(args: Any) -> int:
    """``quantlab backtest``: trades CSV, equity CSV and summary JSON."""
    from quantlab.backtest import BacktestSettings, backtest

    aligned = _pair_from_args(args)
    result = run_analysis(aligned, window=args.window, hedge=args.hedge, log_prices=args.log_prices,
                          health=False)
    frame = result.frame
    if args.log_prices:
        raise ConfigError("log-prices", True, "price-level hedging for the backtest (positions are "
                          "sized in units of y against beta units of x; drop --log-prices)")
    data = aligned[["y_open", "y_close", "x_open", "x_close"]].join(frame[["beta", "zscore",
                                                                            "half_life"]])
    settings = BacktestSettings(entry=args.entry_z, exit=args.exit_z, stop=args.stop_z,
                                max_hold_bars=args.max_hold_bars, fee_bps=args.fee_bps,
                                slippage_bps=args.slippage_bps, fill=args.fill,
                                rehedge_every=1 if args.rehedge else 0)
    bt = backtest(data, settings)
    for path in (args.trades, args.equity):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    trades = bt.trades
    iso = "%Y-%m-%dT%H:%M:%SZ"
    trades.to_csv(args.trades, index=False, date_format=iso)
    equity = bt.equity.copy()
    equity.index.name = "time"
    equity.to_csv(args.equity, date_format=iso)
    from quantlab.ledger import record_backtest_run  # the trial ledger (issue 11)

    summary = {**bt.summary(), **record_backtest_run(args, aligned, bt)}
    write_json(args.summary, {**summary, "metadata": _metadata(args, aligned, "backtest")})
    print(f"{summary['n_trades']} trades, total_pnl={summary['total_pnl']:.6g}, "
          f"sharpe={summary['sharpe']}, max_drawdown={summary['max_drawdown']:.6g}, "
          f"break_even_fee_bps={summary['break_even_fee_bps']}")
    dsr = "n/a" if summary["dsr"] is None else f"{summary['dsr']:.2f}"
    print(f"trial {summary['trial_k']} of {summary['n_trials']} in this family; deflated Sharpe "
          f"{dsr} (ledger {summary['ledger']}, trial {summary['trial_id']})")
    return 0

