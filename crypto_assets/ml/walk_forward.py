"""Walk-forward evaluation of a Spark model: several consecutive test windows, each predicted by
a model fitted on everything before it (less an embargo of one label horizon), the out-of-sample
rows pooled, the strongest naive baseline chosen on them and the lift over it given a
block-bootstrap interval (the numbers: ml/evaluation.py).

Why: one time split gives one noisy number; a gate that promotes on it promotes noise. The
registered model is the last fold's (trained on the most history); the champion is scored on
that fold's test rows, so the gate compares the two on the same holdout.

Public API: `walk_forward(df, task, cfg) -> (WalkForward, last fold's Split, last fold's model)`
with a `Task` (label, horizon, metrics, fit function, score and baseline-candidate columns);
`WalkForward.metrics()` / `.params()` / `.metadata()` are what MLflow and Dagster record;
`config_of(params)` reads a `WalkForwardConfig` from a model's training parameters.
Also here, shared with ml/train.py: `NotEnoughData`, `Split`, `Trained`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from crypto_assets.ml.evaluation import (
    METRICS,
    Assessment,
    WalkForwardConfig,
    assess,
    default_block_rows,
    fold_windows,
)


class NotEnoughData(ValueError):
    """Too little data to train or evaluate a model (no labelled rows yet, one class only, too
    few rows or coins). The only failure a model asset may turn into a green skip (see
    ml/model_specs.py `skippable`); any other error fails the step."""


def only_row(df: DataFrame) -> Row:
    """The row of a global aggregate (no groupBy): Spark returns exactly one, even over no rows."""
    row = df.first()
    if row is None:
        raise RuntimeError("a global aggregate returned no row")
    return row


@dataclass
class Split:
    """One train/test split (the last fold's, for the lineage tags and the champion)."""

    train: DataFrame
    test: DataFrame
    split_time: datetime
    train_rows: int
    test_rows: int
    train_max_time: datetime | None
    test_min_time: datetime | None
    train_label_mean: float | None = None
    test_label_mean: float | None = None
    cached: DataFrame | None = None

    def unpersist(self) -> None:
        """Release the cached rows (call when the holdout is no longer needed)."""
        if self.cached is not None:
            self.cached.unpersist()


@dataclass
class Trained:
    model: PipelineModel
    metrics: dict[str, float]
    params: dict[str, Any]
    split: Split
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FoldInfo:
    """What a fold's fit and its baseline candidates may know: its training rows only."""

    index: int
    train_rows: int
    train_label_mean: float


@dataclass(frozen=True)
class Task:
    """One model's walk-forward: `fit(train rows, fold)` -> model (NotEnoughData drops the fold);
    `score`: the column of the transformed test rows that the metrics rank or measure;
    `candidates(fold)`: name -> column of a naive forecast on the same rows."""

    label: str
    horizon_minutes: int
    gate_metric: str
    metrics: tuple[str, ...]
    fit: Callable[[DataFrame, FoldInfo], PipelineModel]
    score: Callable[[], Column]
    candidates: Callable[[FoldInfo], dict[str, Column]]
    hard: Callable[[], Column] | None = None  # predicted class, for accuracy
    min_train_rows: int = 100
    min_test_rows: int = 30
    classes: tuple[str, str] | None = None  # a classifier's (positives, negatives) names: both must occur


@dataclass
class FoldResult:
    index: int
    test_start: datetime
    test_end: datetime
    train_rows: int
    test_rows: int
    metrics: dict[str, float]


@dataclass
class WalkForward:
    """Per-fold and pooled out-of-sample metrics, every baseline candidate, the assessment."""

    config: WalkForwardConfig
    folds: list[FoldResult]
    dropped: dict[int, str]
    pooled: dict[str, float]  # model, pooled out-of-sample
    baselines: dict[str, dict[str, float]]  # candidate -> metric -> value, pooled
    assessment: Assessment
    holdout: dict[str, float]  # the last fold's: the rows the champion is scored on

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: pooled `<m>`, `<m>_fold_mean`, `fold_<i>_<m>`, `fold_<i>_train_rows`/
        `_test_rows`, `baseline_<candidate>_<m>`, the gate's `baseline_<m>` / `lift_<m>` /
        `lift_<m>_ci_low` / `_ci_high`, `holdout_<m>`. Undefined values are left out."""
        out: dict[str, float] = dict(self.pooled)
        for f in self.folds:
            out.update({f"fold_{f.index}_{k}": v for k, v in f.metrics.items()})
            out.update({f"fold_{f.index}_train_rows": f.train_rows, f"fold_{f.index}_test_rows": f.test_rows})
        for m in self.pooled:
            vals = [f.metrics[m] for f in self.folds if m in f.metrics and math.isfinite(f.metrics[m])]
            if vals:
                out[f"{m}_fold_mean"] = float(np.mean(vals))
        for name, ms in self.baselines.items():
            out.update({f"baseline_{name}_{m}": v for m, v in ms.items()})
        out.update(self.assessment.metrics())
        out.update({f"holdout_{k}": v for k, v in self.holdout.items()})
        out["folds_used"] = len(self.folds)
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}

    def params(self) -> dict[str, Any]:
        iv = self.assessment.interval
        return {"folds": self.config.folds, "test_fraction": self.config.test_fraction, "ci_level": iv.level,
                "bootstrap_resamples": self.config.bootstrap_resamples, "block_rows": iv.block_rows,
                "baseline_name": self.assessment.baseline_name}

    def metadata(self) -> dict[str, Any]:
        """The key numbers for the Dagster UI."""
        a, iv = self.assessment, self.assessment.interval
        return {"folds_used": len(self.folds), "baseline_name": a.baseline_name,
                "lift_ci": f"{iv.describe()} over {a.baseline_name} {a.baseline_value:.4g}",
                **({"folds_dropped": "; ".join(f"fold {i}: {r}" for i, r in self.dropped.items())}
                   if self.dropped else {})}


def config_of(params: dict[str, Any]) -> WalkForwardConfig:
    """The walk-forward settings among a model's training parameters (defaults where absent)."""
    d = WalkForwardConfig()
    return WalkForwardConfig(
        folds=int(params.get("folds", d.folds)), test_fraction=float(params.get("test_fraction", d.test_fraction)),
        bootstrap_resamples=int(params.get("bootstrap_resamples", d.bootstrap_resamples)),
        block_rows=params.get("block_rows", d.block_rows), ci_level=float(params.get("ci_level", d.ci_level)),
        seed=int(params.get("seed", d.seed)))


def _when(df_col: Column, cond: Column) -> Column:
    return F.when(cond, df_col)


def walk_forward(df: DataFrame, task: Task, cfg: WalkForwardConfig,
                 cache: bool = True) -> tuple[WalkForward, Split, PipelineModel]:
    """Fit and predict each fold of the labelled rows of `df` (one cached copy unless `cache` is
    False: `df` is cached already), pool the test rows' predictions (one Arrow collect of a few
    columns per fold) and assess them. Folds with too few rows, or whose fit raises
    NotEnoughData, are dropped; none left raises NotEnoughData. The returned Split is the last
    fold's (its `cached` is the copy to release)."""
    label = task.label
    df = df.filter(F.col(label).isNotNull())
    if cache:
        df = df.cache()
    try:
        return _run(df, task, cfg, df if cache else None)
    except BaseException:
        if cache:
            df.unpersist()
        raise


def _run(df: DataFrame, task: Task, cfg: WalkForwardConfig,
         cached: DataFrame | None) -> tuple[WalkForward, Split, PipelineModel]:
    ts, y = F.col("event_time").cast("double"), F.col(task.label).cast("double")
    span = only_row(df.select(F.min(ts).alias("lo"), F.max(ts).alias("hi"), F.count(F.lit(1)).alias("n"),
                              F.sum(y).alias("pos")))
    if span["lo"] is None or span["hi"] <= span["lo"]:
        raise NotEnoughData(f"no rows with a {task.label} label: not enough history for this horizon")
    if task.classes and span["pos"] in (0, span["n"]):
        pos = int(span["pos"])
        raise NotEnoughData(f"the labelled rows hold {pos} {task.classes[0]} and {span['n'] - pos} {task.classes[1]}: "
                            "a classifier needs both")
    windows = fold_windows(span["lo"], span["hi"], cfg.folds, cfg.test_fraction)
    horizon_s = task.horizon_minutes * 60
    last = len(windows) - 1

    def masks(i: int) -> tuple[Column, Column]:
        start, end = windows[i]
        return ts + horizon_s < start, (ts >= start) & ((ts < end) if i < last else F.lit(True))

    aggs = []
    for i in range(len(windows)):
        tr, te = masks(i)
        aggs += [F.count(_when(F.lit(1), tr)).alias(f"ntr{i}"), F.avg(_when(y, tr)).alias(f"ytr{i}"),
                 F.max(_when(F.col("event_time"), tr)).alias(f"ttr{i}"),
                 F.count(_when(F.lit(1), te)).alias(f"nte{i}"), F.avg(_when(y, te)).alias(f"yte{i}"),
                 F.min(_when(F.col("event_time"), te)).alias(f"tte{i}")]
    st = only_row(df.agg(*aggs))

    folds: list[FoldResult] = []
    dropped: dict[int, str] = {}
    parts: list[dict[str, np.ndarray]] = []
    kept: tuple[int, PipelineModel] | None = None
    cand_names: list[str] = []
    for i, (start, end) in enumerate(windows):
        n_tr, n_te = st[f"ntr{i}"], st[f"nte{i}"]
        if n_tr < task.min_train_rows or n_te < task.min_test_rows:
            dropped[i] = f"{n_tr} train / {n_te} test rows (needs {task.min_train_rows} / {task.min_test_rows})"
            continue
        tr, te = masks(i)
        info = FoldInfo(i, n_tr, float(st[f"ytr{i}"]))
        try:
            model = task.fit(df.filter(tr), info)
        except NotEnoughData as exc:
            dropped[i] = str(exc)
            continue
        cands = task.candidates(info)
        cand_names = list(cands)
        cols = [ts.alias("t"), y.alias("y"), task.score().alias("score"),
                *([task.hard().cast("double").alias("hard")] if task.hard else []),
                *(c.cast("double").alias(f"c_{n}") for n, c in cands.items())]
        pdf = model.transform(df.filter(te)).select(*cols).toPandas()
        arrays = {c: pdf[c].to_numpy(dtype=np.float64) for c in pdf.columns}
        parts.append(arrays)
        folds.append(FoldResult(i, _utc(start), _utc(end), n_tr, n_te, _model_metrics(task, arrays)))
        kept = (i, model)
    if kept is None:
        raise NotEnoughData(f"{task.label}: not enough history: no walk-forward fold has enough rows: "
                            + "; ".join(f"fold {i}: {r}" for i, r in dropped.items()))
    pooled = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(pooled["t"], kind="stable")  # time order, for the block bootstrap
    pooled = {k: v[order] for k, v in pooled.items()}
    candidates = {n: pooled[f"c_{n}"] for n in cand_names}
    block = cfg.block_rows if cfg.block_rows is not None else default_block_rows(len(order), pooled["t"], horizon_s)
    try:
        assessment = assess(task.gate_metric, pooled["score"], candidates, pooled["y"],
                            resamples=cfg.bootstrap_resamples, block_rows=block, level=cfg.ci_level, seed=cfg.seed,
                            chance=task.classes is not None)  # a classifier also faces a random ranking
    except ValueError as exc:  # no candidate defined: one class in every test window
        raise NotEnoughData(f"{task.label}: {exc}") from exc
    baselines = {n: {m: METRICS[m](c, pooled["y"]) for m in task.metrics if m in METRICS} for n, c in candidates.items()}
    i, model = kept
    tr, te = masks(i)
    start = windows[i][0]
    split = Split(df.filter(tr), df.filter(te), _utc(start), st[f"ntr{i}"], st[f"nte{i}"], st[f"ttr{i}"],
                  st[f"tte{i}"], st[f"ytr{i}"], st[f"yte{i}"], cached)
    wf = WalkForward(cfg, folds, dropped, _model_metrics(task, pooled), baselines, assessment, folds[-1].metrics)
    return wf, split, model


def _model_metrics(task: Task, a: dict[str, np.ndarray]) -> dict[str, float]:
    out = {m: METRICS[m](a["score"], a["y"]) for m in task.metrics if m in METRICS}
    if "hard" in a:
        out["accuracy"] = float(np.mean(a["hard"] == a["y"])) if len(a["y"]) else math.nan
    return out


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
