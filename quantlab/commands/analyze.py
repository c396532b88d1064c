"""``quantlab analyze``: per-bar causal analytics, summary and replayed alerts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from quantlab.commands._pair import metadata as _metadata
from quantlab.commands._pair import pair_from_args as _pair_from_args
from quantlab.errors import ConfigError
from quantlab.pairs import run_analysis, write_json


def command(args: Any) -> int:
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
