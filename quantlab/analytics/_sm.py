"""The one place where :mod:`quantlab.analytics` calls statsmodels and unpacks
what it returns (tuples whose shape depends on flags, arrays ordered
90/95/99 %, warnings that carry information). Everything else receives plain
floats and dicts from here.
"""
from __future__ import annotations

import warnings

import numpy as np


def mackinnon_pvalue(stat: float, regression: str, n_vars: int) -> float:
    """MacKinnon (1994) approximate p-value of a (A)DF / Engle-Granger statistic."""
    from statsmodels.tsa.adfvalues import mackinnonp

    if stat != stat:
        return float("nan")
    return float(mackinnonp(stat, regression=regression, N=n_vars))


def mackinnon_crit(regression: str, n_vars: int, nobs: int) -> dict[str, float]:
    """MacKinnon (2010) critical values keyed ``"1%"``, ``"5%"``, ``"10%"``
    (NaN for ``regression="n"`` with more than one variable, as statsmodels)."""
    from statsmodels.tsa.adfvalues import mackinnoncrit

    if regression == "n" and n_vars > 1:
        vals = [np.nan] * 3
    else:
        vals = mackinnoncrit(N=n_vars, regression=regression, nobs=nobs)
    return {"1%": float(vals[0]), "5%": float(vals[1]), "10%": float(vals[2])}


def kpss(x: np.ndarray, regression: str, nlags) -> dict:
    """statsmodels' KPSS as a dict; ``pvalue_bound`` says when the table was
    exceeded ("smaller": true p-value < reported, "greater": > reported)."""
    from statsmodels.tools.sm_exceptions import InterpolationWarning
    from statsmodels.tsa.stattools import kpss as sm_kpss

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InterpolationWarning)
        res = sm_kpss(x, regression=regression, nlags=nlags, result_object=True)
    bound = None
    for w in caught:
        if issubclass(w.category, InterpolationWarning):
            bound = "smaller" if "smaller" in str(w.message) else "greater"
    crit = {k: float(v) for k, v in res.critical_values.items()}
    return {"stat": float(res.statistic), "pvalue": float(res.pvalue), "lags": int(res.lags),
            "critical_values": crit, "pvalue_bound": bound}


def johansen(data: np.ndarray, det_order: int, k_ar_diff: int) -> dict:
    """statsmodels' ``coint_johansen`` as plain arrays; critical values come
    ordered 90 %, 95 %, 99 % and are re-keyed ``"10%"``, ``"5%"``, ``"1%"``."""
    from statsmodels.tsa.vector_ar.vecm import coint_johansen

    res = coint_johansen(data, det_order, k_ar_diff)

    def keyed(rows):
        return tuple({"1%": float(r[2]), "5%": float(r[1]), "10%": float(r[0])} for r in rows)

    return {
        "trace_stat": tuple(float(v) for v in res.trace_stat),
        "trace_crit": keyed(res.trace_stat_crit_vals),
        "max_eig_stat": tuple(float(v) for v in res.max_eig_stat),
        "max_eig_crit": keyed(res.max_eig_stat_crit_vals),
        "eigenvalues": tuple(float(v) for v in res.eig),
        "eigenvectors": np.asarray(res.evec, dtype=float),
        "nobs": int(np.asarray(res.r0t).shape[0]),
    }


def mackinnon_pvalues(stats: np.ndarray, regression: str, n_vars: int) -> np.ndarray:
    """Vectorised :func:`mackinnon_pvalue`: the same tables and branches as
    ``statsmodels.tsa.adfvalues.mackinnonp`` applied to an array (NaN stays NaN)."""
    from scipy.stats import norm
    from statsmodels.tsa import adfvalues as av

    s = np.asarray(stats, dtype=float)
    k = n_vars - 1
    small = np.asarray(av._tau_smallps[regression][k], dtype=float)
    large = np.asarray(av._tau_largeps[regression][k], dtype=float)
    star = av._tau_stars[regression][k]
    with np.errstate(invalid="ignore"):
        p = norm.cdf(np.where(s <= star, np.polyval(small[::-1], s), np.polyval(large[::-1], s)))
        p = np.where(s > av._tau_maxs[regression][k], 1.0, p)
        p = np.where(s < av._tau_mins[regression][k], 0.0, p)
    return np.where(np.isnan(s), np.nan, p)
