"""``quantlab features``: the causal feature table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from quantlab.commands._pair import metadata as _metadata
from quantlab.commands._pair import pair_from_args as _pair_from_args


def command(args: Any) -> int:
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
