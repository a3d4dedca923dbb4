"""Drift scores between two windows' sketches (TFDV / Evidently tests, on sketches).

Numeric fields, from KLL sketches (``cur`` against ``ref``):
- ``psi``: population stability index over 10 bins cut at the reference's deciles,
  shares clipped at 1e-4: sum((p - q) * ln(p / q)).
- ``ks``: Kolmogorov-Smirnov statistic, max |F_cur - F_ref| over both sketches' quantiles.
- ``js``: Jensen-Shannon distance (base 2, 0..1) over 20 bins cut at the reference's
  quantiles.
- ``wasserstein``: W1 distance in the field's unit, mean |Q_cur(u) - Q_ref(u)| over 100
  evenly spaced ranks.
Categorical fields, from frequent-items sketches plus exact value counts (items outside
both sketches' active items pooled as "other"):
- ``linf``: L-infinity distance between the share vectors (TFDV's categorical check).
- ``chi2``: Pearson chi-square divergence sum((p - q)^2 / q), i.e. chi-square / n, so it
  does not grow with window size (q clipped at 1e-4).
Sketch error carries into these values (KLL rank error ~1.3% per quantile).
"""

from __future__ import annotations

import math

import datasketches as ds
import numpy as np
import numpy.typing as npt

from dqpulse.metrics import sketches

_EPSILON = 1e-4


def _pmf(sketch: ds.kll_doubles_sketch, edges: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if edges.size == 0:
        return np.array([1.0])
    return np.asarray(sketch.get_pmf(edges, True), dtype=np.float64)


def _edges(ref: ds.kll_doubles_sketch, bins: int) -> npt.NDArray[np.float64]:
    ranks = np.arange(1, bins) / bins
    return np.unique(sketches.quantiles(ref, ranks))


def numeric_drift(cur: ds.kll_doubles_sketch, ref: ds.kll_doubles_sketch) -> dict[str, float]:
    if cur.is_empty() or ref.is_empty():
        return {}
    edges = _edges(ref, 10)
    p = np.clip(_pmf(cur, edges), _EPSILON, None)
    q = np.clip(_pmf(ref, edges), _EPSILON, None)
    psi = float(np.sum((p - q) * np.log(p / q)))

    edges = _edges(ref, 20)
    p, q = _pmf(cur, edges), _pmf(ref, edges)
    mixture = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / mixture), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / mixture), 0.0)
    js = math.sqrt(max(0.0, float(kl_p.sum() + kl_q.sum()) / 2))

    grid_ranks = np.linspace(0.0, 1.0, 101)
    grid = np.unique(np.concatenate([sketches.quantiles(cur, grid_ranks),
                                     sketches.quantiles(ref, grid_ranks)]))
    cdf_cur = np.asarray(cur.get_cdf(grid, True), dtype=np.float64)[:-1]
    cdf_ref = np.asarray(ref.get_cdf(grid, True), dtype=np.float64)[:-1]
    ks = float(np.max(np.abs(cdf_cur - cdf_ref)))

    ranks = (np.arange(100) + 0.5) / 100
    wasserstein = float(np.mean(np.abs(sketches.quantiles(cur, ranks)
                                       - sketches.quantiles(ref, ranks))))
    return {"psi": psi, "ks": ks, "js": js, "wasserstein": wasserstein}


def categorical_drift(cur: list[tuple[str, float]], cur_total: int,
                      ref: list[tuple[str, float]], ref_total: int) -> dict[str, float]:
    """Drift between two (item, estimated count) lists with their exact value counts."""
    if not cur_total or not ref_total:
        return {}
    cur_share = {item: count / cur_total for item, count in cur}
    ref_share = {item: count / ref_total for item, count in ref}
    items = sorted(set(cur_share) | set(ref_share))
    p = np.array([cur_share.get(i, 0.0) for i in items] + [0.0])
    q = np.array([ref_share.get(i, 0.0) for i in items] + [0.0])
    p[-1] = max(0.0, 1.0 - p[:-1].sum())
    q[-1] = max(0.0, 1.0 - q[:-1].sum())
    linf = float(np.max(np.abs(p - q)))
    chi2 = float(np.sum(np.square(p - q) / np.clip(q, _EPSILON, None)))
    return {"linf": linf, "chi2": chi2}
