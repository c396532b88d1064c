"""The scan gives the same table bit for bit in this process, on a local
process pool and on Dask (in-process LocalCluster and one with worker processes)."""
from __future__ import annotations

import pandas as pd
import pytest

from quantlab.scan import ScanSettings, ScanWindows
from quantlab.scan.run import scan
from quantlab.scan.source import write_universe
from quantlab.scan.synthetic import synthetic_universe

TF = 60_000


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    u = synthetic_universe(10, 1500, n_planted=2, seed=21)
    d = tmp_path_factory.mktemp("archive")
    write_universe(d, u.bars)
    s0 = u.start_ms
    w = ScanWindows(formation=(s0, s0 + 1000 * TF), evaluation=(s0 + 1000 * TF, s0 + 1500 * TF))
    kw = dict(archive=d, windows=w, settings=ScanSettings(min_bars=100), pairs_per_task=9)
    reference = scan(u.symbols, workers=1, **kw)
    return u, kw, reference


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a.attrs["n_tests"] == b.attrs["n_tests"]


def test_local_pool_equals_in_process(universe):
    u, kw, ref = universe
    assert ref.n_tasks > 2 and ref.table["selected"].sum() >= 2
    res = scan(u.symbols, workers=2, **kw)
    assert res.executor == "local pool of 2"
    _same(res.table, ref.table)


def test_dask_in_process_cluster_equals_pool(universe):
    from distributed import Client, LocalCluster

    u, kw, ref = universe
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        res = scan(u.symbols, client=client, **kw)
    assert res.executor.startswith("dask (")
    _same(res.table, ref.table)


def test_dask_worker_processes_via_scheduler_address_equal_pool(universe):
    from distributed import LocalCluster

    u, kw, ref = universe
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        res = scan(u.symbols, scheduler=cluster.scheduler_address, **kw)
    assert cluster.scheduler_address in res.executor
    _same(res.table, ref.table)
