"""The store's two logs: id gaps (recorded by the ingester, updated by backfill)
and alert events.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, StoreError
from quantlab.schema import now_ms as _now_ms
from quantlab.transaction import write_transaction
from quantlab.store.batch import _check_instrument, _filters, _nullable_int, _objects, _opt_int
from quantlab.store.sql import GAP_STATUSES, _GAP_COLUMNS


class _Logs:
    """The gap and alert logs of :class:`~quantlab.store.TickStore` (a mixin)."""

    # ------------------------------------------------------------------ gaps
    def record_gap(self, market: str, symbol: str, kind: str, first_missing_id: int,
                   last_missing_id: int, *, reason: str, detected_ms: int | None = None,
                   before_ms: int | None = None, after_ms: int | None = None,
                   note: str | None = None) -> int:
        """Record missing trade ids ``first_missing_id..last_missing_id`` (inclusive).

        Parameters
        ----------
        market, symbol, kind : the stream (``"usdm"``, ``"BTCUSDT"``, ``"trade"``).
        first_missing_id, last_missing_id : int
            The missing id range, inclusive.
        reason : str
            Why the ids are missing, e.g. ``"reconnect"``, ``"id_jump"``, ``"overflow"``.
        detected_ms : int, optional
            Local time the gap was seen (ms, UTC); default now.
        before_ms, after_ms : int, optional
            Exchange times (ms) of the trades just before and after the gap, when known.
        note : str, optional

        Returns
        -------
        int
            ``gap_id``, for :meth:`update_gap`. The gap starts ``open``.
        """
        market, symbol, kind = _check_instrument(market, symbol, kind)
        first, last = _opt_int("first_missing_id", first_missing_id), _opt_int(
            "last_missing_id", last_missing_id)
        if first is None or last is None or last < first:
            raise ConfigError("last_missing_id", last_missing_id,
                              f"an int >= first_missing_id={first_missing_id}")
        if not isinstance(reason, str) or not reason:
            raise ConfigError("reason", reason, "a non-empty string")
        detected = _now_ms() if detected_ms is None else _opt_int("detected_ms", detected_ms)
        with self._lock:
            con = self._writable()
            try:
                cur = con.execute(
                    "INSERT INTO gaps (market, symbol, kind, first_missing_id, last_missing_id, "
                    "detected_ms, reason, before_ms, after_ms, note) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (market, symbol, kind, first, last, detected, reason,
                     _opt_int("before_ms", before_ms), _opt_int("after_ms", after_ms), note))
            except sqlite3.Error as exc:
                raise self._fail(exc, "recording a gap") from exc
            return int(cur.lastrowid)

    def update_gap(self, gap_id: int, *, status: str | None = None,
                   filled_count: int | None = None, unfilled_count: int | None = None,
                   hole_count: int | None = None, resolved_ms: int | None = None,
                   note: str | None = None) -> None:
        """Update a gap's status and counts; arguments left None are unchanged.

        Parameters
        ----------
        gap_id : int
            From :meth:`record_gap`.
        status : str, optional
            One of :data:`GAP_STATUSES`: ``open``, ``filled`` (every missing id
            stored or a hole), ``partial`` (some ids could not be had),
            ``unfillable`` (none could).
        filled_count, unfilled_count, hole_count : int, optional
            Missing ids stored since, ids no source could give, ids that never
            were market trades (futures raw ids of insurance-fund/ADL prints).
        resolved_ms : int, optional
            When the gap was resolved (ms, UTC). Default: now when ``status``
            leaves ``open``; cleared when it returns to ``open``.
        note : str, optional

        Raises
        ------
        StoreError
            No gap ``gap_id``.
        """
        if status is not None and status not in GAP_STATUSES:
            raise ConfigError("status", status, "one of " + ", ".join(GAP_STATUSES))
        sets: dict[str, object] = {}
        for name, value in (("filled_count", filled_count), ("unfilled_count", unfilled_count),
                            ("hole_count", hole_count)):
            v = _opt_int(name, value)
            if v is not None:
                if v < 0:
                    raise ConfigError(name, value, "an int >= 0")
                sets[name] = v
        if status is not None:
            sets["status"] = status
            if status == "open":
                sets["resolved_ms"] = None
            else:
                sets["resolved_ms"] = _now_ms() if resolved_ms is None else _opt_int(
                    "resolved_ms", resolved_ms)
        elif resolved_ms is not None:
            sets["resolved_ms"] = _opt_int("resolved_ms", resolved_ms)
        if note is not None:
            sets["note"] = str(note)
        with self._lock:
            con = self._writable()
            try:
                if sets:
                    cur = con.execute(
                        f"UPDATE gaps SET {', '.join(f'{k} = ?' for k in sets)} WHERE gap_id = ?",
                        (*sets.values(), int(gap_id)))
                    found = cur.rowcount
                else:
                    found = con.execute("SELECT count(*) FROM gaps WHERE gap_id = ?",
                                        (int(gap_id),)).fetchone()[0]
            except sqlite3.Error as exc:
                raise self._fail(exc, "updating a gap") from exc
        if not found:
            raise StoreError(f"no gap with gap_id={gap_id}", self.path)

    def gaps(self, symbol: str | None = None, *, market: str | None = None,
             kind: str | None = None, status: str | Iterable[str] | None = None) -> pd.DataFrame:
        """Recorded gaps, oldest first, filtered by the arguments given.

        Returns
        -------
        DataFrame
            One row per gap with the columns of the ``gaps`` table (see the
            module docstring); nullable times are ``Int64``.
        """
        where, params = _filters(symbol, market, kind)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                if s not in GAP_STATUSES:
                    raise ConfigError("status", s, "one of " + ", ".join(GAP_STATUSES))
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        sql = f"SELECT {', '.join(_GAP_COLUMNS)} FROM gaps"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn().execute(sql + " ORDER BY gap_id", params).fetchall()
        cols = list(zip(*rows)) if rows else [()] * len(_GAP_COLUMNS)
        data = {}
        for name, values in zip(_GAP_COLUMNS, cols):
            if name in ("before_ms", "after_ms", "resolved_ms"):
                data[name] = _nullable_int(values)
            elif name in ("market", "symbol", "kind", "reason", "status", "note"):
                data[name] = _objects(values)
            else:
                data[name] = np.array(values, dtype=np.int64)
        return pd.DataFrame(data)

    # ------------------------------------------------------------------ alerts
    def append_alerts(self, events: Iterable[Any]) -> int:
        """Persist alert events (:class:`quantlab.alerts.AlertEvent` or their
        ``to_dict()``) in the ``alerts`` table, one transaction; returns the
        number written. The log survives restarts: read it with :meth:`alerts`."""
        rows = []
        now = _now_ms()
        for ev in events:
            d = ev.to_dict() if hasattr(ev, "to_dict") else dict(ev)
            try:
                rows.append((int(d["time_ms"]), str(d["rule"]), str(d.get("name") or d["rule"]),
                             str(d["metric"]), str(d["op"]), float(d["value"]),
                             float(d["threshold"]), str(d["pair"]), str(d.get("message", "")), now))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError("event", d, "an AlertEvent or its to_dict() "
                                  "(time_ms, rule, metric, op, value, threshold, pair)") from exc
        if not rows:
            return 0
        with self._lock:
            con = self._conn()
            with write_transaction(con):
                con.executemany("INSERT INTO alerts (time_ms, rule, name, metric, op, value, threshold, "
                                "pair, message, recorded_ms) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def alert_sink(self) -> Callable[[Any], None]:
        """A sink for :class:`quantlab.alerts.AlertEngine` that persists each
        event here: ``AlertEngine(rules, pair, sinks=[store.alert_sink()])``.
        Use it from the thread that owns this store (the UI pump)."""
        return lambda event: self.append_alerts([event])

    def alerts(self, pair: str | None = None, *, since_ms: int | None = None,
               limit: int | None = None) -> pd.DataFrame:
        """The alert log, newest first: columns ``time`` (UTC), ``time_ms``,
        ``rule``, ``name``, ``metric``, ``op``, ``value``, ``threshold``,
        ``pair``, ``message``, ``recorded_ms`` and ``corrected`` (bool: an
        alert re-evaluated on bars corrected from the store, fired or
        withdrawn; marked by the message prefix ``[corrected]`` or
        ``[withdrawn]``, see :func:`quantlab.alerts.corrected_event`, so files
        of every schema version hold it)."""
        sql = ("SELECT time_ms, rule, name, metric, op, value, threshold, pair, message, recorded_ms "
               "FROM alerts")
        where, params = [], []
        if pair is not None:
            where.append("pair = ?")
            params.append(pair)
        if since_ms is not None:
            where.append("time_ms >= ?")
            params.append(int(since_ms))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_ms DESC, alert_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._conn().execute(sql, params).fetchall()
        cols = ["time_ms", "rule", "name", "metric", "op", "value", "threshold", "pair", "message",
                "recorded_ms"]
        frame = pd.DataFrame.from_records(rows, columns=cols)
        frame = frame.astype({"time_ms": np.int64, "value": np.float64, "threshold": np.float64,
                              "recorded_ms": np.int64})
        frame.insert(0, "time", pd.to_datetime(frame["time_ms"], unit="ms", utc=True))
        frame["corrected"] = frame["message"].astype(str).str.startswith(
            ("[corrected] ", "[withdrawn] ")).astype(bool)
        return frame
