"""Model evaluation on numpy arrays (no Spark): metrics, the strongest naive baseline, a
block-bootstrap confidence interval of the lift over it, silhouettes against random clusters,
and the windows of a walk-forward evaluation.

Why: a gate that compares a point estimate with the weakest baseline promotes noise (an AUC of
0.527 against 0.5 on one split). Here the bar is the best naive forecast on the same
out-of-sample rows, and the lift must clear the gate's margin with its whole confidence
interval; the interval comes from resampling contiguous blocks of time-ordered rows, since
neighbouring rows (overlapping label windows, coins moving together) are not independent.

Public API (used by ml/walk_forward.py, the gate, bench/models.py and tests):

- `roc_auc(score, y)`, `pr_auc(score, y)`: trapezoidal, exact (every distinct score is a
  threshold; ties count half), as Spark's BinaryClassificationEvaluator defines them without
  its 1000-bin downsampling; NaN when a class is missing. `rmse(pred, y)`, `mae(pred, y)`.
  `METRICS` (name -> fn(pred, y)), `HIGHER_IS_BETTER` (name -> bool).
- `lift_of(metric, model_value, baseline_value)`: > 0 means the model is better. Higher-better
  metrics: model - baseline (absolute); errors (rmse, mae): (baseline - model) / baseline
  (relative, as price_model's gate margin). `lift(metric, model, baseline, y)`: the same from
  predictions.
- `strongest_baseline(metric, candidates, y) -> (name, value)`: the best candidate by the metric.
- `block_indices(n, block_rows, resamples, rng)`, `default_block_rows(n, times, horizon_seconds)`,
  `block_bootstrap_lift(metric, model, baseline, y, ...) -> LiftInterval`.
- `assess(metric, model, candidates, y, ..., chance=False) -> Assessment`: all of the above for
  one gate metric, with the MLflow metric names (`Assessment.metrics()`); `chance`: a ranking
  metric also faces `CHANCE`, a random ranking (`chance_value`; baseline None in
  `block_bootstrap_lift` draws a fresh one per resample).
- `silhouette(X, labels)`: squared-Euclidean silhouette, as Spark's ClusteringEvaluator.
  `random_cluster_interval(X, labels, ...) -> LiftInterval`: lift over random clusterings.
- `WalkForwardConfig`, `fold_windows(t_min, t_max, folds, test_fraction)`,
  `fold_masks(times, horizon_seconds, windows)`: expanding-window folds with an embargo.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

_CHUNK_CELLS = 2_000_000  # resamples x rows per vectorised chunk (~16 MB per float matrix)


# ----------------------------------------------------------------------------- metrics
def _binary_curves(score: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and PR-AUC (each shape (R,)) of `score` against `y` for R row weightings `w`
    (R, n): a bootstrap resample is the original rows with multiplicities, so one sort of the
    scores serves every resample. Thresholds are the distinct scores, highest first."""
    score = np.asarray(score, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    r = w.shape[0]
    if len(score) == 0:
        return np.full(r, np.nan), np.full(r, np.nan)
    order = np.argsort(-score, kind="mergesort")
    s, yy, wo = score[order], y[order], w[:, order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    tp = np.cumsum(np.add.reduceat(wo * yy, starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(wo * (1.0 - yy), starts, axis=1), axis=1)
    pos, neg = tp[:, -1:], fp[:, -1:]
    valid = (pos[:, 0] > 0) & (neg[:, 0] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.hstack([np.zeros((r, 1)), tp / pos])
        fpr = np.hstack([np.zeros((r, 1)), fp / neg])
        roc = np.sum((fpr[:, 1:] - fpr[:, :-1]) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)
        seen = tp + fp
        precision = tp / np.maximum(seen, 1.0)
        # thresholds no row of a resample reaches (leading empty groups) take the precision of
        # the first one it does reach: the curve starts at (recall 0, that precision)
        first = np.argmax(seen > 0, axis=1)
        precision = np.where(seen > 0, precision, precision[np.arange(r), first][:, None])
        recall = np.hstack([np.zeros((r, 1)), tp / pos])
        prec = np.hstack([precision[:, :1], precision])
        pr = np.sum((recall[:, 1:] - recall[:, :-1]) * (prec[:, 1:] + prec[:, :-1]) / 2.0, axis=1)
    return np.where(valid, roc, np.nan), np.where(valid, pr, np.nan)


def _weighted(metric: str, pred: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`metric` of `pred` against `y` under each row weighting of `w` (R, n) -> (R,)."""
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if metric in ("auc_roc", "pr_auc"):
        return _binary_curves(pred, y, w)[0 if metric == "auc_roc" else 1]
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "rmse":
            return np.sqrt((w * (y - pred) ** 2).sum(axis=1) / total)
        if metric == "mae":
            return (w * np.abs(y - pred)).sum(axis=1) / total
    raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")


def _value(metric: str, pred: np.ndarray, y: np.ndarray) -> float:
    return float(_weighted(metric, pred, y, np.ones((1, len(np.asarray(y)))))[0])


def roc_auc(score: np.ndarray, y: np.ndarray) -> float:
    """Exact trapezoidal ROC-AUC of `score` against 0/1 `y` (ties count half); NaN with one class."""
    return _value("auc_roc", score, y)


def pr_auc(score: np.ndarray, y: np.ndarray) -> float:
    """Exact trapezoidal PR-AUC; the curve starts at recall 0 with the top threshold's precision
    (a constant score: the share of positives). NaN with one class."""
    return _value("pr_auc", score, y)


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return _value("rmse", pred, y)


def mae(pred: np.ndarray, y: np.ndarray) -> float:
    return _value("mae", pred, y)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auc_roc": roc_auc, "pr_auc": pr_auc, "rmse": rmse, "mae": mae}
HIGHER_IS_BETTER: dict[str, bool] = {"auc_roc": True, "pr_auc": True, "rmse": False, "mae": False,
                                     "silhouette": True, "accuracy": True}


def lift_of(metric: str, model_value: float, baseline_value: float) -> float:
    """> 0: the model is better. Absolute for higher-better metrics, relative for errors."""
    if HIGHER_IS_BETTER[metric]:
        return model_value - baseline_value
    if baseline_value == 0:
        return 0.0 if model_value == 0 else -math.inf
    return (baseline_value - model_value) / baseline_value


def lift(metric: str, model: np.ndarray, baseline: np.ndarray, y: np.ndarray) -> float:
    """`lift_of` the model's and the baseline's predictions on the same rows."""
    return lift_of(metric, METRICS[metric](model, y), METRICS[metric](baseline, y))


def strongest_baseline(metric: str, candidates: Mapping[str, np.ndarray], y: np.ndarray) -> tuple[str, float]:
    """(name, value) of the best candidate by `metric` on these rows: the harder bar. Candidates
    whose metric is undefined (NaN) are skipped; ties go to the first listed."""
    best: tuple[str, float] | None = None
    higher = HIGHER_IS_BETTER[metric]
    for name, pred in candidates.items():
        v = METRICS[metric](pred, y)
        if math.isnan(v):
            continue
        if best is None or (v > best[1] if higher else v < best[1]):
            best = (name, v)
    if best is None:
        raise ValueError(f"no baseline candidate has a defined {metric} on these rows")
    return best


# ----------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class LiftInterval:
    """The lift (model over baseline, > 0 better) and its percentile interval at `level`;
    `resamples` used, `dropped` the resamples where the metric was undefined (a class missing)."""

    lift: float
    ci_low: float
    ci_high: float
    level: float
    resamples: int
    block_rows: int
    dropped: int = 0
    model: float = math.nan  # the metric's values on all rows
    baseline: float = math.nan

    def describe(self) -> str:
        return f"lift {self.lift:.3g}, {self.level:.0%} CI [{self.ci_low:.3g}, {self.ci_high:.3g}]"


def default_block_rows(n: int, times: np.ndarray | None = None, horizon_seconds: float = 0.0) -> int:
    """Block length of the moving-block bootstrap: ceil(n ** (1/3)) (the rate that is optimal for
    variance and interval estimation, Hall, Horowitz & Jing 1995), but at least the rows one
    label horizon spans (rows whose label windows overlap share the same future: a shorter
    block would treat them as independent and make the interval too narrow), and at most n // 2
    (at least two blocks, or every resample is the sample itself)."""
    b = math.ceil(n ** (1 / 3)) if n > 0 else 1
    if times is not None and horizon_seconds > 0 and n > 1:
        t = np.asarray(times, dtype=np.float64)
        span = float(t.max() - t.min())
        if span > 0:
            b = max(b, math.ceil(n * horizon_seconds / span))
    return max(1, min(b, n // 2)) if n >= 2 else 1


def block_indices(n: int, block_rows: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) row indices: blocks of `block_rows` consecutive rows, starts drawn with
    replacement from [0, n - block_rows], concatenated and cut to n (moving-block bootstrap)."""
    b = max(1, min(block_rows, n))
    blocks = math.ceil(n / b)
    starts = rng.integers(0, n - b + 1, size=(resamples, blocks))
    return (starts[:, :, None] + np.arange(b)).reshape(resamples, blocks * b)[:, :n]


CHANCE = "chance"
"""The baseline of a ranking metric that ranks at random: its value is the metric's mean over
random scores on the same rows, and each bootstrap resample draws a fresh one. A constant score
is not enough: with few positives, any score that ranks (even a random one) has a trapezoidal
PR-AUC above the share of positives (10 positives in 720 rows: 0.020 on average, 0.039 at the
95th percentile, vs 0.0139), so a constant baseline lets noise pass the gate."""
RANKING_METRICS = ("auc_roc", "pr_auc")


def _chance(metric: str, y: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`metric` of a fresh random ranking under each row weighting of `w` (R, n) -> (R,): one
    sort per resample (a loop over resamples, not rows)."""
    k = 0 if metric == "auc_roc" else 1
    return np.array([_binary_curves(rng.random(len(y)), y, w[r:r + 1])[k][0] for r in range(w.shape[0])])


def chance_value(metric: str, y: np.ndarray, *, draws: int = 200, seed: int = 7) -> float:
    """The expected `metric` of a random ranking of these rows (mean over `draws`)."""
    y = np.asarray(y, dtype=np.float64)
    v = _chance(metric, y, np.ones((draws, len(y))), np.random.default_rng(seed))
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def block_bootstrap_lift(metric: str, model: np.ndarray, baseline: np.ndarray | None, y: np.ndarray, *,
                         resamples: int = 200, block_rows: int | None = None, level: float = 0.9,
                         seed: int = 7, chance: float | None = None) -> LiftInterval:
    """Lift of `model` over `baseline` (predictions on the same rows, IN TIME ORDER) with a
    moving-block bootstrap percentile interval: each resample recomputes both metrics on the
    same resampled rows. `baseline` None: the CHANCE baseline (a fresh random ranking per
    resample; `chance`: its `chance_value` when the caller has it already). Resamples where the
    metric is undefined are dropped and counted."""
    model, y = (np.asarray(a, dtype=np.float64) for a in (model, y))
    n = len(y)
    b = block_rows if block_rows is not None else default_block_rows(n)
    m_all = METRICS[metric](model, y)
    if baseline is None:
        if metric not in RANKING_METRICS:
            raise ValueError(f"the {CHANCE} baseline ranks at random: {metric} is not a ranking metric")
        b_all = chance if chance is not None else chance_value(metric, y, draws=resamples, seed=seed)
    else:
        baseline = np.asarray(baseline, dtype=np.float64)
        b_all = METRICS[metric](baseline, y)
    point = lift_of(metric, m_all, b_all)
    rng = np.random.default_rng(seed)
    lifts: list[np.ndarray] = []
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for lo in range(0, resamples, step):
        r = min(step, resamples - lo)
        idx = block_indices(n, b, r, rng)
        w = np.bincount((idx + (np.arange(r) * n)[:, None]).ravel(), minlength=r * n).reshape(r, n).astype(np.float64)
        mv = _weighted(metric, model, y, w)
        bv = _chance(metric, y, w, rng) if baseline is None else _weighted(metric, baseline, y, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            lifts.append(mv - bv if HIGHER_IS_BETTER[metric] else (bv - mv) / bv)
    ls = np.concatenate(lifts) if lifts else np.array([])
    ok = ls[np.isfinite(ls)]
    alpha = (1 - level) / 2
    lo_q, hi_q = (np.quantile(ok, [alpha, 1 - alpha]) if len(ok) else (math.nan, math.nan))
    return LiftInterval(point, float(lo_q), float(hi_q), level, len(ok), b, resamples - len(ok), m_all, b_all)


@dataclass(frozen=True)
class Assessment:
    """One gate metric on the out-of-sample rows: the model, every baseline candidate, the
    strongest of them and the lift interval over it."""

    metric: str
    value: float
    baselines: dict[str, float]
    baseline_name: str
    interval: LiftInterval

    @property
    def baseline_value(self) -> float:
        return self.baselines[self.baseline_name]

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics the gate reads: `<m>`, `baseline_<m>` (the strongest),
        `baseline_<candidate>_<m>` (each), `lift_<m>`, `lift_<m>_ci_low`, `lift_<m>_ci_high`."""
        m = self.metric
        out = {m: self.value, f"baseline_{m}": self.baseline_value, f"lift_{m}": self.interval.lift,
               f"lift_{m}_ci_low": self.interval.ci_low, f"lift_{m}_ci_high": self.interval.ci_high}
        out.update({f"baseline_{name}_{m}": v for name, v in self.baselines.items()})
        return out


def assess(metric: str, model: np.ndarray, candidates: Mapping[str, np.ndarray], y: np.ndarray, *,
           resamples: int = 200, block_rows: int | None = None, level: float = 0.9, seed: int = 7,
           chance: bool = False) -> Assessment:
    """The model's `metric`, each candidate's, the strongest, and the block-bootstrap lift
    interval over the strongest: rows in time order. `chance`: a ranking metric also faces the
    CHANCE baseline (a random ranking), whichever of them is stronger."""
    values = {name: METRICS[metric](pred, y) for name, pred in candidates.items()}
    if chance and metric in RANKING_METRICS:
        values[CHANCE] = chance_value(metric, y, draws=resamples, seed=seed)
    defined = {k: v for k, v in values.items() if not math.isnan(v)}
    if not defined:
        raise ValueError(f"no baseline candidate has a defined {metric} on these rows")
    higher = HIGHER_IS_BETTER[metric]
    name = next(k for k, v in defined.items() if v == (max if higher else min)(defined.values()))
    iv = block_bootstrap_lift(metric, model, None if name == CHANCE else candidates[name], y, resamples=resamples,
                              block_rows=block_rows, level=level, seed=seed, chance=values.get(CHANCE))
    return Assessment(metric, iv.model, values, name, iv)


# ----------------------------------------------------------------------------- clustering
def _silhouettes(d: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean silhouettes (R,) of R labelings (R, n) over one squared-distance matrix d (n, n)."""
    labels = np.atleast_2d(labels).astype(np.int64)
    r, n = labels.shape
    k = int(labels.max()) + 1
    onehot = np.zeros((r, n, k))
    onehot[np.arange(r)[:, None], np.arange(n)[None, :], labels] = 1.0
    counts = onehot.sum(axis=1)  # (r, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_to = (d[None] @ onehot) / counts[:, None, :]  # (r, n, k): mean distance to each cluster
    own = np.take_along_axis(mean_to, labels[:, :, None], axis=2)[..., 0]
    own_n = np.take_along_axis(counts, labels, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = own * own_n / (own_n - 1)  # the point itself excluded
    other = np.where(onehot.astype(bool) | (counts[:, None, :] == 0), np.inf, mean_to).min(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(a < other, 1 - a / other, np.where(a > other, other / a - 1, 0.0))
    s = np.where(own_n == 1, 0.0, s)  # single-point clusters: 0, as Spark
    return s.mean(axis=1)


def _sq_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sq = (x * x).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with squared Euclidean distances (Spark ClusteringEvaluator's default,
    sklearn's metric="sqeuclidean"); needs at least two clusters."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("a silhouette needs at least two clusters")
    _, inv = np.unique(labels, return_inverse=True)
    return float(_silhouettes(_sq_distances(x), inv)[0])


def random_cluster_interval(x: np.ndarray, labels: np.ndarray, *, resamples: int = 200, seed: int = 7,
                            level: float = 0.9) -> LiftInterval:
    """The model's silhouette against `resamples` random clusterings of the same points with the
    same k and the same cluster sizes (random permutations of the model's labels: the null of
    "clusters unrelated to the features", and never a one-cluster draw). lift = silhouette -
    mean(random); ci_low = silhouette - the random's upper quantile, ci_high = - its lower."""
    x = np.asarray(x, dtype=np.float64)
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    d = _sq_distances(x)
    model = float(_silhouettes(d, inv)[0])
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.broadcast_to(inv, (resamples, len(inv))).copy(), axis=1)
    rand = _silhouettes(d, perms)
    alpha = (1 - level) / 2
    lo_q, hi_q = np.quantile(rand, [alpha, 1 - alpha])
    mean = float(rand.mean())
    return LiftInterval(model - mean, model - float(hi_q), model - float(lo_q), level, resamples, 0, 0, model, mean)


# ----------------------------------------------------------------------------- walk-forward
@dataclass(frozen=True)
class WalkForwardConfig:
    """Consecutive test windows that together cover `test_fraction` of the labelled time span;
    each fold trains on everything before its window (expanding), less an embargo of one label
    horizon. The bootstrap settings of the lift interval ride along."""

    folds: int = 3
    test_fraction: float = 0.3
    bootstrap_resamples: int = 200
    block_rows: int | None = None
    ci_level: float = 0.9
    seed: int = 7


def fold_windows(t_min: float, t_max: float, folds: int, test_fraction: float) -> list[tuple[float, float]]:
    """`folds` consecutive, equal test windows [start, end) ending at t_max (the last one also
    holds t == t_max), together test_fraction of [t_min, t_max]."""
    if folds < 1 or not 0 < test_fraction < 1:
        raise ValueError(f"folds must be >= 1 and 0 < test_fraction < 1 (got {folds}, {test_fraction})")
    width = (t_max - t_min) * test_fraction / folds
    first = t_max - width * folds
    return [(first + i * width, t_max if i == folds - 1 else first + (i + 1) * width) for i in range(folds)]


def fold_masks(times: np.ndarray, horizon_seconds: float,
               windows: list[tuple[float, float]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) boolean masks per window: test rows start <= t < end (the last window also
    t == end); train rows t + horizon < start (their label window ends before the test starts)."""
    t = np.asarray(times, dtype=np.float64)
    out = []
    for i, (start, end) in enumerate(windows):
        test = (t >= start) & ((t < end) | ((t == end) if i == len(windows) - 1 else False))
        out.append((t + horizon_seconds < start, test))
    return out
