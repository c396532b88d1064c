"""What the buttons and scripts ask of a monitor on demand (``_Actions``, a mixin
of :class:`~quantlab.ui.monitor.LiveMonitor`): ADF / Engle-Granger now, export
of each pair's bars and analytics or its feature table, the shareable HTML report
built in a background process and polled without blocking, analysis of two files
with no live feed, and the :meth:`summary` counters for scripts and tests.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from quantlab.bars import parse_timeframe
from quantlab.errors import ConfigError, QuantlabError
from quantlab.ui import analytics as ui_analytics
from quantlab.ui.panels import PairView, _describe, _error_html, _fmt, _note_html, _table
from quantlab.ui.pipeline import PairPipeline


class _Actions:
    """On-demand actions of :class:`~quantlab.ui.monitor.LiveMonitor` (a mixin)."""

    # -- ADF now, export ---------------------------------------------------------------------
    def adf_now(self) -> None:
        """Run ADF on the spread and Engle-Granger on the prices now; show
        the results as small tables under each pair."""
        for v in self.views:
            p = v.pipeline
            _, y, x = p.closes()
            spread = np.fromiter((r["spread"] for r in p.rows), dtype=np.float64,
                                 count=len(p.rows))
            need = max(20, p.spec.window)
            have = int(np.isfinite(spread).sum())
            if have < need:
                v.adf.value = _note_html(f"ADF needs {need} bars with a spread, have {have}")
                continue
            try:
                results = ui_analytics.tests_now(y, x, spread)
            except QuantlabError as exc:
                v.adf.value = _error_html(str(exc))
                continue
            parts = []
            for title, res in results:
                rows = [("statistic", _fmt(res.stat, ".4f")), ("p-value", _fmt(res.pvalue, ".4f"))]
                rows += [(f"critical {k}", _fmt(c, ".4f")) for k, c in res.critical_values.items()]
                rows += [("lags", str(res.lags)), ("observations", str(res.nobs))]
                parts.append(f"<div style='display:inline-block;vertical-align:top;"
                             f"margin-right:32px'>{_table(rows, html.escape(title))}</div>")
            v.stat_values["adf_pvalue"] = float(results[0][1].pvalue)
            v.stat_values["coint_pvalue"] = float(results[1][1].pvalue)
            stamp = time.strftime("%H:%M:%S")
            v.adf.value = (f"<div style='font-size:11px;color:#777'>ADF at {stamp} on "
                           f"{have} bars</div>" + "".join(parts))

    def export(self, fmt: str = ".csv", directory: str | Path | None = None) -> list[Path]:
        """Write each pair's current bars and analytics (``.csv``,
        ``.parquet`` or ``.xlsx``) and show where; returns the paths."""
        return self._export_tables("monitor", lambda v: v.pipeline.frame(), fmt, directory)

    def export_features(self, fmt: str = ".csv", directory: str | Path | None = None) -> list[Path]:
        """Write each pair's feature table (:func:`quantlab.features.feature_table`
        over the kept closed bars, with the pair's window and hedge; every column
        causal, no labels) and show where, with a download link for CSV files;
        returns the paths. Same table as ``quantlab features`` on the same bars."""
        from quantlab.features import feature_table

        def features(v: PairView) -> pd.DataFrame:
            aligned = v.pipeline.aligned()
            if len(aligned) < 3:
                return aligned.iloc[:0]
            return feature_table(aligned, window=max(3, v.pipeline.spec.window),
                                 hedge=v.pipeline.spec.hedge)

        return self._export_tables("features", features, fmt, directory, download=True)

    #: largest CSV offered as an in-page download link (bytes); bigger: the path only
    DOWNLOAD_LINK_MAX_BYTES = 20_000_000

    def _export_tables(self, kind: str, table: Callable[[PairView], pd.DataFrame], fmt: str,
                       directory: str | Path | None, download: bool = False) -> list[Path]:
        from quantlab.export import default_filename, export_frame

        if not fmt.startswith("."):
            fmt = "." + fmt
        out_dir = Path(directory or self.params.export_dir)
        frames = []
        for v in self.views:
            frame = table(v)
            if frame.empty:
                raise ConfigError("export", f"{v.spec.label}: no bars yet",
                                  "at least one closed bar (start the feed or load files)")
            frames.append((v, frame))
        paths, links = [], []
        for v, frame in frames:
            spec = v.pipeline.spec
            name = default_filename(kind, [spec.symbol_y, spec.symbol_x], spec.timeframe,
                                    frame.index[0], frame.index[-1], fmt.lstrip("."))
            meta = {"symbols": [spec.symbol_y, spec.symbol_x], "timeframe": spec.timeframe,
                    "window": spec.window, "method": spec.hedge, "source": self.params.source,
                    "market": self.params.market, "z_entry": spec.z_entry, "z_exit": spec.z_exit,
                    "alert_rules": list(spec.rules)}
            if "feature_settings" in frame.attrs:
                meta["feature_settings"] = frame.attrs["feature_settings"]
            path = export_frame(frame, out_dir / name, metadata=meta)
            paths.append(path)
            text = html.escape(str(path))
            if download and fmt == ".csv" and path.stat().st_size <= self.DOWNLOAD_LINK_MAX_BYTES:
                data = base64.b64encode(path.read_bytes()).decode()
                text += (f" (<a download='{html.escape(path.name)}' href='data:text/csv;base64,"
                         f"{data}' style='color:#1565c0'>download</a>)")
            links.append(text)
        self.message.value = _note_html("written: " + ", ".join(links), markup=True)
        return paths

    # -- files (no live feed) ------------------------------------------------------------------
    def _load_uploads(self) -> None:
        ups = []
        for w, leg in ((self.w_up_y, "Y"), (self.w_up_x, "X")):
            if not w.value:
                raise ConfigError(f"{leg} file", None, f"a file in the {leg} upload box")
            item = w.value[0]
            ups.append((item["name"], bytes(item["content"])))
        self.load_files(ups[0], ups[1])

    def load_files(self, file_y: tuple[str, bytes] | str | Path,
                   file_x: tuple[str, bytes] | str | Path) -> PairView:
        """Run the analytics and plots on two files (one per leg): OHLC CSV,
        Binance klines/trades/aggTrades files or captures. Stops a running
        feed. A bad file raises (the buttons show the error) and changes
        nothing."""
        from quantlab.bars import aggregate_bars, resample_trades
        from quantlab.files import load_file, load_file_bytes

        params = self.params_from_controls()
        loaded = []
        for item, leg_symbol in ((file_y, params.symbol_y), (file_x, params.symbol_x)):
            if isinstance(item, tuple):
                lf = load_file_bytes(item[0], item[1])
            else:
                lf = load_file(item)
            loaded.append(lf)
        tf = parse_timeframe(params.timeframe)
        frames, symbols = [], []
        for lf, fallback in zip(loaded, (params.symbol_y, params.symbol_x)):
            sym = lf.symbol or fallback
            frame = lf.frame
            if lf.is_bars:
                frame = frame.copy()
                # OHLC files do not count trades; a bar with volume (or unknown) traded.
                if "trade_count" in frame.columns:
                    traded = ~frame["is_empty"].to_numpy(dtype=bool) if "is_empty" in frame else True
                    frame["trade_count"] = np.where((frame["trade_count"] == 0) & traded, 1,
                                                    frame["trade_count"])
                src_tf = _infer_tf(frame)
                if src_tf and tf > src_tf and tf % src_tf == 0:
                    frame = aggregate_bars(frame, tf, source_timeframe=src_tf)
                elif src_tf and tf != src_tf:
                    tf = src_tf
            else:
                if "symbol" in frame.columns and frame["symbol"].nunique() > 1:
                    frame = frame[frame["symbol"] == sym]
                frame = resample_trades(frame, tf)
            frames.append(frame)
            symbols.append(sym)
        if frames[0].empty or frames[1].empty:
            raise ConfigError("files", "no bars", "files with at least one trade or bar each")
        spec = dataclasses.replace(self.views[0].spec, symbol_y=symbols[0], symbol_x=symbols[1],
                                   timeframe=f"{tf}ms" if tf % 1000 else _tf_text(tf),
                                   window=params.window, hedge=params.hedge)
        pipeline = PairPipeline(spec, analytics_factory=self._analytics_factory)
        pipeline.add_bars(frames[0], frames[1])
        if pipeline.bars_committed == 0:
            raise ConfigError("files", "no overlapping bars",
                              "two files covering the same time range")
        # Everything parsed: now (and only now) change the display.
        if self.running:
            self.stop()
        view = PairView(spec, analytics_factory=self._analytics_factory)
        view.replace_pipeline(pipeline)
        self.views = [view]
        self.pairs_box.children = [view.widget]
        self.mode = "files"
        self._refresh_status(force=True)
        self._show_note(f"loaded {loaded[0].format} file for {symbols[0]} and {loaded[1].format} "
                        f"file for {symbols[1]}: {pipeline.bars_committed:,} bars")
        return view

    # -- report (issue 9 contract: quantlab.reports.start_report) --------------------------
    def report(self, out: str | Path | None = None) -> Any:
        """Start a shareable HTML report of the first pair in a background
        process (:func:`quantlab.reports.start_report`) and return its job.
        The UI pump (or a small poll task when the feed is stopped) polls
        ``job.poll()`` without blocking and shows a link to the file, or the
        error, when it is done; the kernel stays responsive meanwhile."""
        try:
            from quantlab.reports import start_report
        except ImportError as exc:
            raise ConfigError("report", "quantlab.reports.start_report is not available",
                              "a quantlab with the report builder (issue 9)") from exc
        spec = self.views[0].pipeline.spec
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path(self.params.export_dir) / (
                f"report-{spec.symbol_y}-{spec.symbol_x}-{spec.timeframe}-{stamp}.html")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        job = start_report(y=spec.symbol_y, x=spec.symbol_x, market=self.params.market,
                           timeframe=spec.timeframe, db=str(self.params.db_path),
                           params={"window": spec.window, "hedge": spec.hedge,
                                   "z_entry": spec.z_entry, "z_exit": spec.z_exit,
                                   "alert_rules": list(spec.rules)},
                           out=str(out))
        self._report = (job, out, time.monotonic())
        self.b_report.disabled = True
        self.report_link.value = _note_html(f"building the report {out.name} ...")
        if not self.running:
            try:  # in a kernel the button callback runs on the kernel's loop
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop here (plain Python): the caller polls the job
                loop = None
            if loop is not None:
                self._report_task = loop.create_task(self._poll_report_loop())
        return job

    async def _poll_report_loop(self) -> None:
        while self._report is not None and not self.running:
            self._poll_report()
            await asyncio.sleep(0.3)

    def _poll_report(self) -> None:
        """Non-blocking: show the report's link or error once the job is done."""
        if self._report is None:
            return
        job, out, t0 = self._report
        try:
            result = job.poll()
        except Exception as exc:  # a broken job reports, never breaks the pump
            result = None
            self._report = None
            self.b_report.disabled = False
            self.report_link.value = _error_html(f"report failed: {_describe(exc)}")
            return
        if result is None:
            return
        self._report = None
        self.b_report.disabled = False
        took = time.monotonic() - t0
        if getattr(result, "ok", False):
            path = Path(getattr(result, "html", None) or out)
            try:
                href = os.path.relpath(path.resolve(), Path.cwd())
            except ValueError:  # another drive
                href = str(path)
            href = href.replace(os.sep, "/")
            self.report_link.value = (
                f"<div style='font-size:12px'>report ready ({took:.0f} s): "
                f"<a href='{html.escape(href)}' target='_blank' style='color:#1565c0'>"
                f"{html.escape(path.name)}</a></div>")
        else:
            err = getattr(result, "error", None) or "unknown error"
            self.report_link.value = _error_html(f"report failed: {err}")

    # -- reporting -----------------------------------------------------------------------------
    def summary(self) -> dict:
        """Counters for scripts and tests (plain JSON-able values)."""
        st = self.session.status()
        out: dict[str, Any] = {
            "running": self.running,
            "mode": self.mode,
            "pairs": {},
            "pump_ticks": self.pump.ticks if self.pump else self._last_ticks,
            "pump_errors": self.pump.errors if self.pump else 0,
            "last_error": self.last_error,
        }
        for v in self.views:
            p = v.pipeline
            out["pairs"][v.spec.label] = {
                "bars": p.bars_committed, "rows_kept": len(p.rows),
                "trades_y": p.trades["y"], "trades_x": p.trades["x"],
                "alerts": p.alerts_fired, "late_trades": sum(b.late_trades for b in p._bars.values()),
                "bars_corrected": p.bars_corrected, "analytics_stale": p.analytics_stale,
                "bars_inserted": p.bars_inserted, "resyncs": p.resyncs,
                "alerts_corrected": p.alerts_corrected,
                "zscore": _json_float(p.rows[-1]["zscore"]) if p.rows else None,
            }
        if st is not None:
            out["ingest"] = {"state": st.state, "trades_stored": st.trades_stored,
                             "dropped": st.dropped, "gaps_found": st.gaps_found,
                             "trades_backfilled": st.trades_backfilled,
                             "reconnects": st.reconnects, "queue_depth": st.queue_depth,
                             "error": st.error}
        out["ui_missed"] = self.session.missed
        return out


def _json_float(v: float) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _infer_tf(frame: pd.DataFrame) -> int | None:
    if len(frame) < 2:
        return None
    ms = frame.index.as_unit("ms").asi8
    d = np.diff(ms)
    d = d[d > 0]
    return int(np.gcd.reduce(d)) if d.size else None


def _tf_text(tf_ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if tf_ms % size == 0:
            return f"{tf_ms // size}{unit}"
    return f"{tf_ms}ms"
