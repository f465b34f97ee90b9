"""Spark MLlib training through Dagster (walk-forward, strongest baselines, lift intervals),
MLflow lineage and registry, the champion gate, and predictions from champions. One small
deterministic market (a positive control for the promotions), trained once per module."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from typing import Literal, cast

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pytest
from dagster_pyspark import LazyPySparkResource

from crypto_assets.defs import models, predictions, training_data
from crypto_assets.ml.registry import champion_version, load_champion
from crypto_assets.ml.scoring import score_linear
from crypto_assets.ml.train import binary_metrics, linear_coefficients, time_split
from crypto_assets.ml.training_set import FEATURES
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.resources.priority import ComputePriorityResource
from crypto_assets.settings import spark_config
from crypto_assets_tests.trained_market import (
    COINS,
    assert_split_counts,
    fresh_copy,
    iso,
    market,
    positive_control,
    prediction_rows,
    published,
    training_path,
)

pytestmark = pytest.mark.slow
RUN_CONFIG = {"ops": {"price_model": {"config": {"horizons": ["1h", "4h"]}},
                      "anomaly_model": {"config": {"num_trees": 10, "max_depth": 5}}}}
GATES = ["trend_model_gate", "anomaly_model_gate", "price_model_gate", "coin_clusters_gate"]
MODEL_ASSETS = [models.trend_model, models.anomaly_model, models.price_model, models.coin_clusters]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, spark, request):
    """The simulated market's training set, its labels replaced by a positive control, the four
    models trained on it; the real (random-walk) training set kept aside in `honest_home`."""
    home = tmp_path_factory.mktemp("models")
    lh = LakehouseResource(home=str(home), coins=COINS)
    mlf = MlflowResource(home=str(home))
    market(lh)
    resources = {"lakehouse": lh, "mlflow": mlf, "pyspark": LazyPySparkResource(spark_config=spark_config({})),
                 "compute_priority": ComputePriorityResource(nice=0)}
    assert dg.materialize([training_data.training_set], resources=resources).success
    honest_home = tmp_path_factory.mktemp("honest")
    (honest_home / "lake" / "training").mkdir(parents=True)
    shutil.copy(training_path(home), training_path(honest_home))
    positive_control(training_path(home))
    result = dg.materialize(MODEL_ASSETS, resources=resources, run_config=RUN_CONFIG)
    return {"home": home, "lh": lh, "mlf": mlf, "resources": resources, "result": result, "assets": MODEL_ASSETS,
            "honest_home": honest_home}


def _gates(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_learnable_label_is_promoted_with_its_interval_above_zero(trained):
    result = trained["result"]
    assert result.success
    gates = _gates(result)
    assert set(gates) == set(GATES)
    mlf = trained["mlf"]
    for m in ("trend_model", "anomaly_model"):
        gate = gates[f"{m}_gate"]
        assert gate.passed and gate.metadata["outcome"].value == "promoted", gate.description
        assert cast(float, gate.metadata["lift_ci_low"].value) > 0.05, gate.description
        assert champion_version(mlf, mlf.registered_name(m)) == "1"
    price = gates["price_model_gate"]
    assert price.passed, price.description
    assert [price.metadata[f"{h}_outcome"].value for h in ("1h", "4h")] == ["promoted", "promoted"]
    md = result.asset_materializations_for_node("trend_model")[0].metadata
    auc, base, low = (cast(float, md[k].value) for k in ("auc_roc", "baseline_auc_roc", "lift_auc_roc_ci_low"))
    assert auc > base + low - 1e-9
    assert md["baseline_name"].value in ("majority", "last_direction") and md["folds_used"].value == 3
    assert "mlflow_run_id" in md and md["model_version"].value == "1"
    desc = gates["trend_model_gate"].description
    assert desc.startswith(f"auc_roc {md['auc_roc'].value:.4g} vs {md['baseline_name'].value} ") and "90% CI [" in desc
    pmd = result.asset_materializations_for_node("price_model")[0].metadata
    assert pmd["1h_baseline_name"].value in ("zero_return", "persistence")
    assert cast(float, pmd["1h_lift_rmse_ci_low"].value) > 0


def test_coin_clusters_gate_follows_its_interval(trained):
    """Five coins in k=3 clusters: few distinct partitions, so random ones often match KMeans'
    and the interval may well reach 0: whatever it says, the gate follows it."""
    gate = _gates(trained["result"])["coin_clusters_gate"]
    md = trained["result"].asset_materializations_for_node("coin_clusters")[0].metadata
    assert md["baseline_name"].value == "random" and "clusters" in md
    assert md["baseline_random_silhouette"].value == md["baseline_silhouette"].value
    low = cast(float, gate.metadata["lift_ci_low"].value)
    assert gate.metadata["outcome"].value == ("promoted" if low > 0 else "rejected"), gate.description
    assert "silhouette" in gate.description and "vs random" in gate.description


def test_lineage_tags_and_walk_forward_metrics(trained):
    mlf, result = trained["mlf"], trained["result"]
    client = mlf.client()
    run_id = result.asset_materializations_for_node("trend_model")[0].metadata["mlflow_run_id"].value
    run = client.get_run(run_id)
    tags = run.data.tags
    assert tags["dagster_run_id"] == result.run_id
    assert tags["asset_key"] == "trend_model"
    # the asset's code version (a hash of its code, defs/code_versions.py), on the run and the version
    code_version = models.trend_model.code_versions_by_key[dg.AssetKey("trend_model")]
    assert code_version is not None
    assert tags["code_version"] == code_version and len(code_version) == 12
    assert tags["training_set_path"].endswith("training/training_set.parquet")
    assert_split_counts(tags, horizon=timedelta(minutes=15))
    assert datetime.fromisoformat(tags["train_max_time"]) < datetime.fromisoformat(tags["test_min_time"])
    assert run.inputs.dataset_inputs, "training dataset logged with mlflow.log_input"
    m = run.data.metrics
    for metric in ("auc_roc", "pr_auc", "accuracy", "auc_roc_fold_mean", "baseline_auc_roc", "lift_auc_roc",
                   "lift_auc_roc_ci_low", "lift_auc_roc_ci_high", "baseline_majority_auc_roc",
                   "baseline_last_direction_auc_roc", "baseline_majority_pr_auc", "holdout_auc_roc"):
        assert metric in m, metric
    for i in range(3):  # every fold: its metrics and sizes; each trains on more rows than the one before
        assert {f"fold_{i}_auc_roc", f"fold_{i}_train_rows", f"fold_{i}_test_rows"} <= set(m)
    assert m["fold_0_train_rows"] < m["fold_1_train_rows"] < m["fold_2_train_rows"]
    assert m["holdout_auc_roc"] == m["fold_2_auc_roc"] and int(tags["test_rows"]) == m["fold_2_test_rows"]
    assert m["baseline_auc_roc"] == max(m["baseline_majority_auc_roc"], m["baseline_last_direction_auc_roc"])
    assert m["lift_auc_roc_ci_low"] <= m["lift_auc_roc"] <= m["lift_auc_roc_ci_high"]
    p = run.data.params
    assert (p["folds"], p["ci_level"], p["bootstrap_resamples"]) == ("3", "0.9", "200") and int(p["block_rows"]) >= 15
    mv = client.get_model_version(mlf.registered_name("trend_model"), "1")
    assert mv.tags["dagster_run_id"] == result.run_id and mv.tags["gate"] == "passed"
    assert mv.tags["code_version"] == code_version
    assert mv.tags["baseline_name"] == p["baseline_name"] and mv.tags["lift_ci"].endswith("at 90%")


def test_the_random_walk_market_gets_an_honest_verdict(trained, tmp_path):
    """The simulator's own labels (a random walk: little to learn): trend_model on them, in its
    own home and registry. Its gate follows the interval whatever it is; nothing is forced."""
    home = trained["honest_home"]
    res = dict(trained["resources"], lakehouse=LakehouseResource(home=str(home), coins=COINS),
               mlflow=MlflowResource(home=str(home)))
    out = dg.materialize([models.trend_model], resources=res)
    assert out.success
    gate = _gates(out)["trend_model_gate"]
    low = cast(float, gate.metadata["lift_ci_low"].value)
    assert gate.metadata["outcome"].value == ("promoted" if low > 0 else "rejected"), gate.description
    md = out.asset_materializations_for_node("trend_model")[0].metadata
    lift, high = cast(float, md["lift_auc_roc"].value), cast(float, md["lift_auc_roc_ci_high"].value)
    assert md["lift_auc_roc_ci_low"].value == pytest.approx(low, abs=1e-6) and low - 1e-6 <= lift <= high + 1e-6
    print(f"random-walk trend_model: {gate.description}")  # the measured honest outcome (pytest -s)


def test_too_few_coins_for_a_clustering_skip_green(trained, tmp_path):
    """One coin: coin_clusters says why in its metadata and the run stays green."""
    import pyarrow.parquet as pq

    home = tmp_path / "one_coin"
    (home / "lake" / "training").mkdir(parents=True)
    one = pq.read_table(training_path(trained["honest_home"]), filters=[("coin_id", "=", "bitcoin")])
    pq.write_table(one, training_path(home))
    res = dict(trained["resources"], lakehouse=LakehouseResource(home=str(home), coins=["bitcoin"]),
               mlflow=MlflowResource(home=str(home)))
    out = dg.materialize([models.coin_clusters], resources=res)
    assert out.success
    md = out.asset_materializations_for_node("coin_clusters")[0].metadata
    assert cast(str, md["skipped"].value).startswith("1 coin(s): a clustering needs at least 3")
    gate = _gates(out)["coin_clusters_gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN


def test_time_split_has_no_overlap(trained, spark):
    df = spark.read.parquet(str(trained["home"] / "lake" / "training" / "training_set.parquet"))
    s = time_split(df, "label_up", 15, 0.8)
    assert s.train_rows > 0 and s.test_rows > 0
    assert s.train_max_time is not None and s.test_min_time is not None  # both sides have rows
    assert s.train_max_time < s.test_min_time
    assert s.train_max_time + timedelta(minutes=15) < s.test_min_time + timedelta(seconds=1)  # label embargo


def test_worse_model_is_rejected_the_run_stays_green_and_predictions_use_the_champion(trained, kafka):
    mlf = trained["mlf"]
    name = mlf.registered_name("trend_model")
    before = champion_version(mlf, name)
    worse = dg.materialize(
        [models.trend_model, predictions.predictions], resources=dict(trained["resources"], kafka=kafka),
        run_config={"ops": {"trend_model": {"config": {"max_iter": 0}}}},  # zero coefficients: a coin toss
    )
    assert worse.success  # a rejection is news, not a failure
    gate = _gates(worse)["trend_model_gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert gate.metadata["outcome"].value == "rejected" and gate.metadata["promoted"].value is False
    assert "does not clear the margin" in gate.description
    assert champion_version(mlf, name) == before
    latest = max(mlf.client().search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    assert latest.version != before and latest.tags["gate"] == "rejected"
    md = worse.asset_materializations_for_node("predictions")[0].metadata  # not blocked by the rejection
    assert md["trend_model_version"].value == before


def test_the_gate_margin_comes_from_the_assets_own_config(trained):
    """The same training as the fixture's (its lift interval well above 0), judged with a margin
    above its upper bound set on the asset's config: rejected by the margin, the champion stays."""
    mlf = trained["mlf"]
    name = mlf.registered_name("trend_model")
    before = champion_version(mlf, name)
    first = cast(float, _gates(trained["result"])["trend_model_gate"].metadata["lift_ci_high"].value)
    margin = round(first + 0.01, 2)
    res = dg.materialize([models.trend_model], resources=trained["resources"],
                         run_config={"ops": {"trend_model": {"config": {"gate_margin": margin}}}})
    assert res.success
    gate = _gates(res)["trend_model_gate"]
    assert gate.metadata["outcome"].value == "rejected" and gate.severity == dg.AssetCheckSeverity.WARN
    assert gate.description.endswith(f"does not clear the margin {margin:g}"), gate.description
    assert champion_version(mlf, name) == before


def test_a_champion_that_cannot_score_the_holdout_is_left_out_and_other_errors_propagate(trained, spark, caplog):
    """The gate compares with the champion where it can score this run's holdout. A feature it
    reads missing (the feature set changed) leaves its metrics out with a warning; any other
    failure is not taken for that: it propagates and fails the step."""
    mlf = trained["mlf"]
    version, champ = load_champion(mlf, mlf.registered_name("trend_model"))
    assert champ is not None  # trained: there is a champion
    holdout = spark.read.parquet(str(trained["home"] / "lake" / "training" / "training_set.parquet")).limit(500)
    log = logging.getLogger("gate-test")
    scored = models.champion_metrics(log, version, lambda: binary_metrics(champ.transform(holdout), "label_up"))
    assert set(scored) == {"auc_roc", "pr_auc", "accuracy"} and 0 < scored["auc_roc"] < 1
    missing = holdout.drop(FEATURES[0])
    with caplog.at_level(logging.WARNING, logger="gate-test"):
        assert models.champion_metrics(log, version, lambda: binary_metrics(champ.transform(missing), "label_up")) == {}
    assert f"champion v{version} could not score this holdout" in caplog.text and FEATURES[0] in caplog.text
    with pytest.raises(ZeroDivisionError):
        models.champion_metrics(log, version, lambda: {"auc_roc": 1 / 0})


def test_retraining_on_unchanged_data_is_green_and_keeps_the_champions(trained):
    """The fixture's run promoted the first versions; a second run on the same data reproduces
    them: every promoted model's gate passes as a tie, nothing fails, no run turns red; the
    clustering gets the same verdict as before (tied if it was promoted)."""
    mlf = trained["mlf"]
    names = {m: mlf.registered_name(m) for m in ("trend_model", "anomaly_model", "coin_clusters", "price_model_1h",
                                                  "price_model_4h")}
    before = {m: champion_version(mlf, n) for m, n in names.items()}
    again = dg.materialize(trained["assets"], resources=trained["resources"], run_config=RUN_CONFIG)
    assert again.success
    gates = _gates(again)
    assert set(gates) == set(GATES)
    first = _gates(trained["result"])["coin_clusters_gate"].metadata["outcome"].value
    clusters = gates["coin_clusters_gate"].metadata["outcome"].value
    assert clusters == {"promoted": "tied", "rejected": "rejected"}[first], gates["coin_clusters_gate"].description
    for m in ("trend_model", "anomaly_model"):
        gate = gates[f"{m}_gate"]
        assert gate.metadata["outcome"].value == "tied", gate.description
        assert champion_version(mlf, names[m]) == before[m]
        assert gate.metadata["champion_after"].value == before[m]
    for h in ("1h", "4h"):
        assert gates["price_model_gate"].metadata[f"{h}_outcome"].value == "tied", gates["price_model_gate"].description
        assert champion_version(mlf, names[f"price_model_{h}"]) == before[f"price_model_{h}"]


def test_no_price_model_trained_is_green(trained):
    mlf = trained["mlf"]
    before = champion_version(mlf, mlf.registered_name("price_model_1h"))
    res = dg.materialize([models.price_model], resources=trained["resources"],
                         run_config={"ops": {"price_model": {"config": {"horizons": ["1h"], "min_train_rows": 10**9}}}})
    assert res.success
    gate = _gates(res)["price_model_gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert gate.description.startswith("no price model was trained in this run")
    assert champion_version(mlf, mlf.registered_name("price_model_1h")) == before


def test_predictions_use_champions_and_publish_each_row(trained, kafka, tmp_path):
    lh = fresh_copy(trained, tmp_path)
    res = dict(trained["resources"], kafka=kafka, lakehouse=lh)
    out = dg.materialize([predictions.predictions], resources=res)
    assert out.success
    mlf = trained["mlf"]
    champ = {m: champion_version(mlf, mlf.registered_name(m))
             for m in ("trend_model", "anomaly_model", "price_model_1h", "price_model_4h", "price_model_24h")}
    assert champ["price_model_24h"] is None and None not in [v for k, v in champ.items() if k != "price_model_24h"]
    rows = prediction_rows(lh)
    with lh.connect(read_only=True) as conn:  # what was to score: every feature row of the last 24 h
        features = set(conn.sql("SELECT coin_id, event_time FROM market_features WHERE event_time >= "
                                "(SELECT max(event_time) FROM market_features) - INTERVAL 24 HOUR").fetchall())
    assert {(r["coin_id"], r["event_time"]) for r in rows} == features
    for r in rows:  # the champion versions, per row
        assert (r["trend_model_version"], r["anomaly_model_version"], r["price_model_versions"]) == (
            champ["trend_model"], champ["anomaly_model"], f"1h:v{champ['price_model_1h']},4h:v{champ['price_model_4h']}")
        assert 0 <= r["trend_prob_up"] <= 1 and 0 <= r["anomaly_prob"] <= 1
        assert r["forecast_return_1h"] is not None and r["forecast_return_4h"] is not None
        assert r["forecast_return_24h"] is None and r["published_at"] is not None
    md = out.asset_materializations_for_node("predictions")[0].metadata
    assert (md["predictions"].value, md["published"].value) == (len(rows), len(rows))
    assert (md["trend_model_version"].value, md["anomaly_model_version"].value) == (champ["trend_model"], champ["anomaly_model"])

    # the topic, read to its end, holds exactly one message per row: key = coin_id, the row's values
    sent = published(kafka)
    assert len(sent) == len(rows)
    by_key = {(m["coin_id"], m["event_time"]): (key, m) for _p, _o, key, m in sent}
    assert len(by_key) == len(sent)
    for r in rows:
        key, m = by_key[(r["coin_id"], iso(r["event_time"]))]
        assert key == r["coin_id"]
        assert m == {c: (iso(r[c]) if c == "event_time" else r[c]) for c in predictions.OUTBOX_COLUMNS}

    # nothing new: nothing scored, nothing written, nothing sent
    again = dg.materialize([predictions.predictions], resources=res)
    md = again.asset_materializations_for_node("predictions")[0].metadata
    assert md["predictions"].value == 0 and md["published"].value == 0
    assert prediction_rows(lh) == rows
    assert published(kafka) == sent


def test_predictions_write_only_if_the_high_water_mark_did_not_move(trained, tmp_path):
    """Two scorings of the same batch (two predictions runs side by side): the first write wins,
    the second finds the state moved and writes nothing; the next read has nothing left."""
    lh = fresh_copy(trained, tmp_path)
    champs = predictions._champions(trained["mlf"], trained["resources"]["pyspark"])
    a = predictions._read_batch(lh, 24.0)
    b = predictions._read_batch(lh, 24.0)
    assert a.rows.height > 0 and (a.hwm, a.seq) == (b.hwm, b.seq)
    out_b = predictions._score(b.rows, champs, trained["resources"]["pyspark"])
    assert predictions._write(lh, b, out_b)
    out_a = predictions._score(a.rows, champs, trained["resources"]["pyspark"])
    assert out_a["predicted_at"][0] != out_b["predicted_at"][0]
    assert not predictions._write(lh, a, out_a)
    with lh.connect() as conn:
        stamps = conn.sql("SELECT DISTINCT predicted_at FROM predictions").fetchall()
        state = conn.sql("SELECT hwm, seq FROM asset_state WHERE asset = 'predictions'").fetchall()
        n = conn.sql("SELECT count(*) FROM predictions").fetchall()[0][0]
    assert stamps == [(out_b["predicted_at"][0],)] and n == out_b.height  # only b's rows
    assert state == [(b.upstream, b.seq + 1)]
    c = predictions._read_batch(lh, 24.0)
    assert c.rows.height == 0 and c.hwm == c.upstream


def test_numpy_scoring_agrees_with_spark(trained, spark):
    df = spark.read.parquet(str(trained["home"] / "lake" / "training" / "training_set.parquet")).limit(2000)
    mlf = trained["mlf"]
    _, champ = load_champion(mlf, mlf.registered_name("trend_model"))  # the last walk-forward fold's model
    assert champ is not None
    pdf = champ.transform(df).select(*FEATURES, "probability").toPandas()
    spark_p = np.array([p[1] for p in pdf["probability"]])
    ours = score_linear(pl.from_pandas(cast(pd.DataFrame, pdf[FEATURES])), linear_coefficients(champ))
    np.testing.assert_allclose(ours, spark_p, rtol=1e-9, atol=1e-12)


def test_predictions_without_champion_produce_nothing(tmp_path, spark, kafka):
    lh = LakehouseResource(home=str(tmp_path / "nochamp"), coins=COINS)
    market(lh, days=0.2)
    res = {"lakehouse": lh, "mlflow": MlflowResource(home=str(tmp_path / "nochamp")), "kafka": kafka,
           "pyspark": LazyPySparkResource(spark_config=spark_config({})),
                 "compute_priority": ComputePriorityResource(nice=0)}
    out = dg.materialize([predictions.predictions], resources=res)
    assert out.success
    md = out.asset_materializations_for_node("predictions")[0].metadata
    assert md["predictions"].value == 0 and "no champion" in cast(str, md["reason"].value)


def test_binary_metrics_equal_spark_evaluator(spark):
    """The numpy ROC/PR areas are Spark's BinaryClassificationEvaluator's (exact, numBins=0),
    ties in the score included; accuracy is the share of prediction == label."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.linalg import Vectors

    from crypto_assets.ml.train import binary_metrics

    rng = np.random.default_rng(5)
    n = 3000
    y = (rng.random(n) < 0.2).astype(float)
    s = np.round(np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1), 2)  # rounded: many tied scores
    rows = [(Vectors.dense([1 - a, a]), float(a >= 0.5), float(b)) for a, b in zip(s, y, strict=False)]
    pred = spark.createDataFrame(rows, ["probability", "prediction", "label"]).repartition(3)
    ours = binary_metrics(pred, "label")
    areas: tuple[tuple[Literal["areaUnderROC", "areaUnderPR"], str], ...] = (("areaUnderROC", "auc_roc"), ("areaUnderPR", "pr_auc"))
    for metric, key in areas:
        ev = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="probability", metricName=metric, numBins=0)
        assert ours[key] == pytest.approx(ev.evaluate(pred), abs=1e-12), metric
    assert ours["accuracy"] == pytest.approx(float(np.mean((s >= 0.5) == (y == 1))), abs=1e-12)
