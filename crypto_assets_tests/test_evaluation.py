"""crypto_assets.ml.evaluation: metrics, strongest baseline, block-bootstrap lift intervals,
silhouettes against random clusters, walk-forward windows. Pure numpy, fast."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, silhouette_score

from crypto_assets.ml import evaluation as ev


def test_auc_on_known_small_cases():
    y = np.array([0, 0, 1, 1])
    assert ev.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), y) == pytest.approx(0.75)
    assert ev.roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), y) == 1.0
    assert ev.roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), y) == 0.0
    assert ev.roc_auc(np.full(4, 0.5), y) == 0.5  # a constant ranks nothing; ties count half
    assert math.isnan(ev.roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    s = np.round(rng.random(500), 1)
    y = (rng.random(500) < 0.3).astype(float)
    assert ev.roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_pr_auc_known_cases():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    assert ev.pr_auc(np.zeros(10), y) == pytest.approx(0.2)  # constant: the share of positives
    perfect = y.astype(float)
    assert ev.pr_auc(perfect, y) == pytest.approx(1.0)
    # two thresholds: (recall .5, precision 1), (recall 1, precision 2/3): trapezoids from (0, 1)
    s = np.array([0.9, 0, 0, 0, 0.8, 0.8, 0, 0, 0, 0])
    assert ev.pr_auc(s, y) == pytest.approx(0.5 * 1 + 0.5 * (1 + 2 / 3) / 2)
    rng = np.random.default_rng(2)
    s, y = rng.random(300), (rng.random(300) < 0.2).astype(float)
    assert abs(ev.pr_auc(s, y) - average_precision_score(y, s)) < 0.02  # step vs trapezoid, close


def test_rmse_mae_and_relative_lift_for_errors():
    y = np.array([1.0, -1.0, 2.0, 0.0])
    assert ev.rmse(np.zeros(4), y) == pytest.approx(math.sqrt(6 / 4))
    assert ev.mae(np.zeros(4), y) == pytest.approx(1.0)
    assert ev.lift_of("rmse", 0.9, 1.0) == pytest.approx(0.1)  # relative: (baseline - model) / baseline
    assert ev.lift_of("rmse", 1.8, 2.0) == pytest.approx(0.1)
    assert ev.lift_of("mae", 1.1, 1.0) == pytest.approx(-0.1)
    assert ev.lift_of("auc_roc", 0.55, 0.5) == pytest.approx(0.05)  # absolute
    assert ev.lift("rmse", y * 0.5, np.zeros(4), y) == pytest.approx(0.5)


def test_strongest_baseline_picks_the_best_by_the_metric():
    rng = np.random.default_rng(3)
    y = rng.normal(size=400)
    near = y + rng.normal(size=400) * 0.5
    cands = {"zero": np.zeros(400), "persistence": near, "bad": y + 3}
    assert ev.strongest_baseline("rmse", cands, y)[0] == "persistence"
    assert ev.strongest_baseline("rmse", {"zero": np.zeros(400), "bad": -y}, y)[0] == "zero"
    yb = (y > 0).astype(float)
    name, value = ev.strongest_baseline("auc_roc", {"majority": np.full(400, 1.0), "last": (near > 0) * 1.0}, yb)
    assert name == "last" and value > 0.6


def test_block_indices_keep_blocks_contiguous():
    idx = ev.block_indices(103, 10, 50, np.random.default_rng(0))
    assert idx.shape == (50, 103)
    assert idx.min() >= 0 and idx.max() <= 102
    steps = np.diff(idx.reshape(50, -1)[:, :100].reshape(50, 10, 10), axis=2)
    assert (steps == 1).all()  # inside a block: consecutive rows
    starts = idx[:, ::10]
    assert len(np.unique(starts)) > 50  # starts vary


def test_default_block_rows_covers_a_label_horizon():
    assert ev.default_block_rows(1000) == 10
    times = np.repeat(np.arange(1000.0) * 60, 5)  # 5 coins, one row a minute
    assert ev.default_block_rows(5000, times, 15 * 60) == math.ceil(5000 * 900 / (999 * 60))
    assert ev.default_block_rows(100, np.arange(100.0), 1e9) == 50  # at most n // 2


def test_strong_signal_clears_zero_and_noise_interval_contains_zero():
    rng = np.random.default_rng(4)
    n = 3000
    y = (rng.random(n) < 0.4).astype(float)
    strong = ev.block_bootstrap_lift("auc_roc", y + rng.normal(size=n), np.full(n, 0.5), y, seed=7)
    assert strong.ci_low > 0.1 and strong.ci_low <= strong.lift <= strong.ci_high
    noise = ev.block_bootstrap_lift("auc_roc", rng.random(n), np.full(n, 0.5), y, seed=7)
    assert noise.ci_low < 0 < noise.ci_high
    assert noise.resamples == 200 and noise.dropped == 0 and noise.block_rows == math.ceil(n ** (1 / 3))
    yr = rng.normal(size=n)
    rel = ev.block_bootstrap_lift("rmse", yr + rng.normal(size=n), yr + 2 * rng.normal(size=n), yr)
    assert rel.ci_low > 0 and rel.lift == pytest.approx((rel.baseline - rel.model) / rel.baseline)


def test_bootstrap_is_seeded_and_wider_with_longer_blocks_on_autocorrelated_errors():
    rng = np.random.default_rng(5)
    n = 2000
    y = np.zeros(n)
    drift = np.repeat(rng.normal(size=n // 100), 100)  # errors that persist for 100 rows
    model = y + drift + 0.1 * rng.normal(size=n)
    a = ev.block_bootstrap_lift("rmse", model, y + drift, y, block_rows=1)
    assert a == ev.block_bootstrap_lift("rmse", model, y + drift, y, block_rows=1)  # seeded
    assert a != ev.block_bootstrap_lift("rmse", model, y + drift, y, block_rows=1, seed=8)
    short = ev.block_bootstrap_lift("mae", drift + 0.5, drift, y, block_rows=1)
    long = ev.block_bootstrap_lift("mae", drift + 0.5, drift, y, block_rows=200)
    assert long.ci_high - long.ci_low > 2 * (short.ci_high - short.ci_low)


def test_resamples_without_both_classes_are_dropped_and_counted():
    y = np.zeros(200)
    y[:3] = 1  # all positives in the first rows: most block resamples miss them
    iv = ev.block_bootstrap_lift("auc_roc", np.linspace(1, 0, 200), np.full(200, 0.5), y, block_rows=50)
    assert iv.dropped > 0 and iv.resamples + iv.dropped == 200
    assert iv.lift == pytest.approx(0.5)


def test_assess_logs_every_candidate_and_the_strongest():
    rng = np.random.default_rng(6)
    y = (rng.random(1000) < 0.5).astype(float)
    a = ev.assess("auc_roc", y + rng.normal(size=1000), {"majority": np.ones(1000), "random": rng.random(1000)}, y)
    m = a.metrics()
    assert set(m) >= {"auc_roc", "baseline_auc_roc", "lift_auc_roc", "lift_auc_roc_ci_low", "lift_auc_roc_ci_high",
                      "baseline_majority_auc_roc", "baseline_random_auc_roc"}
    assert m["baseline_auc_roc"] == max(m["baseline_majority_auc_roc"], m["baseline_random_auc_roc"])
    assert m["lift_auc_roc"] == pytest.approx(m["auc_roc"] - m["baseline_auc_roc"])


def test_silhouette_matches_sklearn_sqeuclidean():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 4))
    labels = rng.integers(0, 4, size=30)
    labels[0] = 9  # a singleton cluster (silhouette 0) and non-contiguous label ids
    assert ev.silhouette(x, labels) == pytest.approx(silhouette_score(x, labels, metric="sqeuclidean"), abs=1e-12)
    with pytest.raises(ValueError):
        ev.silhouette(x, np.zeros(30))


def test_random_cluster_interval_separates_real_clusters_from_random_ones():
    rng = np.random.default_rng(8)
    centers = np.array([[0, 0], [10, 0], [0, 10]])
    labels = np.repeat([0, 1, 2], 10)
    x = centers[labels] + rng.normal(size=(30, 2))
    iv = ev.random_cluster_interval(x, labels, resamples=200, seed=7)
    assert iv.model > 0.8 and iv.ci_low > 0.5
    assert iv.ci_low <= iv.lift <= iv.ci_high
    shuffled = rng.permutation(labels)
    null = ev.random_cluster_interval(x, shuffled, resamples=200, seed=7)
    assert null.ci_low < 0 < null.ci_high


def test_fold_windows_are_consecutive_and_cover_the_test_fraction():
    w = ev.fold_windows(0.0, 1000.0, 3, 0.3)
    assert len(w) == 3 and w[-1][1] == 1000.0
    assert w[0][0] == pytest.approx(700.0)
    for (s0, e0), (s1, _e1) in zip(w, w[1:], strict=False):
        assert e0 == s1 and e0 > s0
    with pytest.raises(ValueError):
        ev.fold_windows(0, 1, 0, 0.3)


def test_fold_masks_are_disjoint_expanding_and_respect_the_embargo():
    times = np.arange(0.0, 1001.0)
    masks = ev.fold_masks(times, 15.0, ev.fold_windows(0.0, 1000.0, 3, 0.3))
    tests = [te for _, te in masks]
    assert sum(int(te.sum()) for te in tests) == 301  # every row from 700 to 1000 once, 1000 included
    assert not (tests[0] & tests[1]).any() and not (tests[1] & tests[2]).any()
    trains = [tr for tr, _ in masks]
    assert all(trains[i].sum() < trains[i + 1].sum() for i in range(2))  # expanding
    for (tr, te) in masks:
        assert times[tr].max() + 15.0 < times[te].min()  # no training label reaches into the test window
        assert not (tr & te).any()


def test_a_random_score_beats_a_constant_on_few_positives_but_not_chance():
    """The PR-AUC bias the CHANCE baseline exists for: with 10 positives in 720 rows, random
    scores average above the share of positives, so over many random 'models' a constant
    baseline passes a good share of them; against CHANCE the interval's lower bound stays <= 0
    for (nearly) all of them, while a real signal still clears it."""
    rng = np.random.default_rng(3)
    n, pos = 720, 10
    y = np.zeros(n)
    y[rng.choice(n, pos, replace=False)] = 1.0
    const = np.full(n, pos / n)
    assert ev.chance_value("pr_auc", y, draws=400) > ev.pr_auc(const, y) + 0.003
    passed_const = passed_chance = 0
    for i in range(20):
        noise = np.random.default_rng(100 + i).random(n)
        a = ev.assess("pr_auc", noise, {"majority": const}, y, resamples=100, block_rows=10, seed=i)
        b = ev.assess("pr_auc", noise, {"majority": const}, y, resamples=100, block_rows=10, seed=i, chance=True)
        assert b.baseline_name == ev.CHANCE and b.baselines[ev.CHANCE] > b.baselines["majority"]
        passed_const += a.interval.ci_low > 0
        passed_chance += b.interval.ci_low > 0
    assert passed_chance <= 1 < passed_const
    signal = y + np.random.default_rng(9).normal(0, 0.3, n)
    s = ev.assess("pr_auc", signal, {"majority": const}, y, resamples=100, block_rows=10, chance=True)
    assert s.interval.ci_low > 0.2
    assert "baseline_chance_pr_auc" in s.metrics()


def test_chance_is_only_for_ranking_metrics():
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="ranking"):
        ev.block_bootstrap_lift("rmse", y, None, y)
    a = ev.assess("rmse", y, {"zero": np.zeros(4)}, y, chance=True)
    assert ev.CHANCE not in a.baselines
