r"""The trial ledger: every evaluation that could be used to pick a strategy is
counted, so that every Sharpe can be deflated by the number of trials behind it.

One SQLite file per research project (WAL), written by the CLI, the reports, the
scanner's client and the UI; read by anyone::

    from quantlab.ledger import Ledger, Trial, trial_from_backtest
    ledger = Ledger("data/ledger.sqlite")                 # or Ledger.default(db="data/live.db")
    ref = ledger.record(trial_from_backtest(aligned, result, params={"window": 120}))
    ref.trial_id, ref.k, ref.n                            # "trial k of n in this family"
    d = ledger.deflate(ref)                               # d.dsr, d.n_trials, d.expected_max_sharpe

Guarantees
----------
* **A trial is counted once.** Its identity is the SHA-256 of the canonical JSON
  of ``kind``, ``y``, ``x`` (the ordering), ``market``, ``timeframe``,
  ``params`` and ``data_hash`` (:func:`bars_digest` of the input bars). Recording
  the same evaluation on identical data again updates ``last_seen_ms``,
  ``n_seen`` and the statistics (the latest code's numbers), not the count.
* **Nothing is deleted.** :meth:`Ledger.forget` (``quantlab ledger forget``) marks
  trials as forgotten and records the act itself in ``events`` (who, when, why,
  which). Forgotten trials leave every family count; re-recording a forgotten
  trial reinstates it (it was tried again) and logs a ``reinstate`` event.
* **Safe for several processes.** WAL; each write is one short ``BEGIN
  IMMEDIATE`` transaction (a batch from :meth:`Ledger.record_many` is one
  transaction), other writers wait up to ``busy_timeout_s``. Dask or process-pool
  workers never write: they return :class:`Trial` values (plain, picklable) and
  the client records them with :meth:`Ledger.record_many`.

Families
--------
Trials on the same target form a family, whose size is the :math:`N` of the
deflated Sharpe ratio. The family of a trial :math:`t` is every *active* trial
:math:`u` with

1. the same unordered pair (``BTCUSDT/ETHUSDT`` holds both orderings) and the
   same ``market``;
2. the same ``timeframe``;
3. an overlapping data range: :math:`u.start < t.end` and
   :math:`t.start < u.end` (ranges are ``[start_ms, end_ms)``, first bar's open
   to last bar's open plus one bar).

Overlap is not transitive, so a family is seen *from* a trial (two disjoint
months each overlap a trial spanning both). Within the family, counts depend
on what the trial produced:

* strategy trials (kind ``backtest`` or ``sweep_cell``, or any trial carrying a
  Sharpe, e.g. a report that ran a backtest): :math:`N` = strategy trials of the
  family, and :math:`V[\widehat{SR}]` the variance of their per-bar Sharpes (a
  strategy that never traded counts with Sharpe 0);
* test trials (a p-value but no Sharpe, e.g. a scan's cointegration test):
  :math:`m` = test trials of the family, for Benjamini-Yekutieli;
* anything else: every family member.

``k`` is the trial's position among those, in recording order (trial id).

Default location
----------------
``QUANTLAB_LEDGER`` if set; else ``ledger.sqlite`` beside the tick store
(``data/live.db`` -> ``data/ledger.sqlite``); else, for files or an archive,
``ledger.sqlite`` in the current directory: data that is only read never gets a
file written beside it. See :func:`default_ledger_path`.

Schema (version 1)
------------------
::

    CREATE TABLE trials (
        trial_id        INTEGER PRIMARY KEY AUTOINCREMENT,
        trial_key       TEXT NOT NULL UNIQUE,  -- sha256 hex of the identity above
        kind            TEXT NOT NULL,         -- backtest, sweep_cell, scan, report
        pair            TEXT NOT NULL,         -- unordered: sorted legs 'BTCUSDT/ETHUSDT'
        y               TEXT NOT NULL,         -- dependent leg (ordering)
        x               TEXT NOT NULL,
        market          TEXT NOT NULL,         -- 'spot', 'usdm' or '' (unknown)
        timeframe       TEXT NOT NULL,         -- '1m', '1h', ...
        start_ms        INTEGER NOT NULL,      -- open time of the first bar, ms UTC
        end_ms          INTEGER NOT NULL,      -- open time of the last bar + bar size
        n_bars          INTEGER,
        data_hash       TEXT NOT NULL,         -- bars_digest() of the input bars
        params          TEXT NOT NULL,         -- canonical JSON
        stats           TEXT NOT NULL,         -- JSON: every statistic produced
        sharpe          REAL,                  -- per-bar Sharpe (not annualised)
        n_obs           INTEGER,               -- returns behind sharpe
        skew            REAL,
        kurtosis        REAL,                  -- non-excess (normal = 3)
        pvalue          REAL,                  -- the trial's test p-value (e.g. coint)
        version         TEXT NOT NULL,         -- quantlab version that computed stats
        source          TEXT,                  -- where the bars came from (informative)
        first_seen_ms   INTEGER NOT NULL,
        last_seen_ms    INTEGER NOT NULL,
        n_seen          INTEGER NOT NULL,      -- times recorded
        forgotten_event INTEGER                -- events.event_id; NULL while active
    );
    CREATE TABLE events (
        event_id  INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms   INTEGER NOT NULL,
        action    TEXT NOT NULL,               -- 'forget' or 'reinstate'
        trial_ids TEXT NOT NULL,               -- JSON list
        reason    TEXT,
        user      TEXT,
        version   TEXT
    );

Layout
------
``values`` (constants, canonical JSON, :func:`bars_digest`, the default path,
:class:`Trial`, :class:`TrialRef`, :class:`TrialRecord`, :class:`Deflation`; no
I/O), ``book`` (:class:`Ledger`: schema, connection, recording, reading,
forgetting; :func:`record_backtest_run`) and its mixin ``families`` (families,
adjusted p-values, the deflated Sharpe). Every name is importable from
``quantlab.ledger``.
"""
from __future__ import annotations

from quantlab.errors import LedgerError
from quantlab.ledger.book import Ledger, record_backtest_run  # noqa: F401 (commands.backtest)
from quantlab.ledger.values import (DIGEST_COLUMNS, KINDS, LEDGER_ENV,  # noqa: F401
                                    LEDGER_FILENAME, SCHEMA_VERSION, STRATEGY_KINDS, Deflation,
                                    Trial, TrialRecord, TrialRef, bars_digest, canonical_json,
                                    default_ledger_path, pair_name, trial_from_backtest)

__all__ = [
    "LEDGER_ENV", "LEDGER_FILENAME", "KINDS", "STRATEGY_KINDS", "Ledger", "LedgerError", "Trial",
    "TrialRef", "TrialRecord", "Deflation", "bars_digest", "canonical_json", "default_ledger_path",
    "trial_from_backtest", "pair_name",
]
