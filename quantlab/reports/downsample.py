"""Display downsampling that keeps spikes: per-bucket min and max.

A year of 1-minute bars is 525,600 points per series; a plot 1,000 pixels wide
cannot show more than two values per pixel column. :func:`minmax_indices`
splits the series into ``n_out / 2`` equal buckets of consecutive points and
keeps, per bucket, the positions of its smallest and largest value (in time
order), plus the first and last point. Every spike survives, because the
extreme of each bucket is kept. Statistics never use the downsampled data.

Pure numpy.
"""
from __future__ import annotations

import numpy as np

__all__ = ["minmax_indices"]


def minmax_indices(values, n_out: int) -> np.ndarray:
    """Sorted positions of at most ``n_out`` points of ``values`` that keep every
    bucket's minimum and maximum.

    NaN values are never chosen unless a whole bucket is NaN (then its first
    position is kept, so a hole stays a hole).

    >>> v = np.zeros(1000); v[123] = 50.0; v[777] = -9.0
    >>> idx = minmax_indices(v, 20)
    >>> len(idx) <= 20, 123 in idx, 777 in idx, int(idx[0]), int(idx[-1])
    (True, True, True, 0, 999)
    >>> minmax_indices([1.0, 2.0, 3.0], 10).tolist()
    [0, 1, 2]
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if n_out < 4:
        raise ValueError(f"n_out must be >= 4, got {n_out}")
    if n <= n_out:
        return np.arange(n)
    buckets = (n_out - 2) // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    size = int(np.diff(edges).max())
    # Pad every bucket to the same width so one argmin/argmax per row does it.
    pos = edges[:-1, None] + np.arange(size)[None, :]
    valid = pos < edges[1:, None]
    pos_c = np.minimum(pos, n - 1)
    block = v[pos_c]
    lo = np.where(valid & ~np.isnan(block), block, np.inf)
    hi = np.where(valid & ~np.isnan(block), block, -np.inf)
    imin = pos_c[np.arange(buckets), lo.argmin(axis=1)]
    imax = pos_c[np.arange(buckets), hi.argmax(axis=1)]
    return np.unique(np.concatenate(([0, n - 1], imin, imax)))
