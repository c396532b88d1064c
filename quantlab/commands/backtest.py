"""``quantlab backtest``: trades CSV, equity CSV, summary JSON, a ledger trial."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from quantlab.commands._pair import metadata as _metadata
from quantlab.commands._pair import pair_from_args as _pair_from_args
from quantlab.errors import ConfigError
from quantlab.pairs import run_analysis, write_json


def command(args: Any) -> int:
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
    summary = {**bt.summary(), **_record_trial(args, aligned, bt)}
    write_json(args.summary, {**summary, "metadata": _metadata(args, aligned, "backtest")})
    print(f"{summary['n_trades']} trades, total_pnl={summary['total_pnl']:.6g}, "
          f"sharpe={summary['sharpe']}, max_drawdown={summary['max_drawdown']:.6g}, "
          f"break_even_fee_bps={summary['break_even_fee_bps']}")
    dsr = "n/a" if summary["dsr"] is None else f"{summary['dsr']:.2f}"
    print(f"trial {summary['trial_k']} of {summary['n_trials']} in this family; deflated Sharpe "
          f"{dsr} (ledger {summary['ledger']}, trial {summary['trial_id']})")
    return 0


def _record_trial(args: Any, aligned: Any, result: Any) -> dict:
    """The run in the trial ledger (issue 11): ``--ledger``, else the default ledger
    of the run's source; params are the analytics options of the namespace."""
    from quantlab.ledger import default_ledger_path, record_backtest_run

    path = getattr(args, "ledger", None) or default_ledger_path(
        db=getattr(args, "db", None), files=getattr(args, "files", None),
        archive=getattr(args, "archive", None))
    params = {"window": args.window, "hedge": args.hedge, "log_prices": bool(args.log_prices),
              "max_carry_bars": args.max_carry_bars}
    return record_backtest_run(aligned, result, path=path, params=params)
