"""Issue 14 point 1, the shuffled-label half: the same pipeline on a training set whose labels
are permuted in time (one seeded permutation of the rows applied to every label column, the
features kept) learns nothing, and its gates say so: no promotion, and the lift interval over
the strongest naive baseline does not lie above 0. The positive control on the same features
(labels the features determine) is promoted with the interval above 0, so this file can fail.

One simulated market; the training_set asset builds the Parquet file once, then each variant
rewrites its label columns and trains trend_model and anomaly_model through dg.materialize into
an MLflow store of its own (no champion from the other variant)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crypto_assets.defs import models, training_data
from crypto_assets.ml.model_specs import ANOMALY_MODEL, TREND_MODEL, ModelSpec
from crypto_assets.ml.registry import champion_version
from crypto_assets.ml.train import ANOMALY_LABEL
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets_tests.model_helpers import (
    gates,
    load_market,
    materialize,
    metadata,
    model_resources,
    simulated_ticks,
    small_ops,
    training_set_path,
)

pytestmark = pytest.mark.slow
COINS = ["bitcoin", "ethereum"]
MINUTES = 1200  # 2 x 1,200 feature rows
SEED = 20261203
END = datetime(2026, 11, 20, tzinfo=UTC)  # a fixed market: the same figures and verdicts on every run
SPECS = (TREND_MODEL, ANOMALY_MODEL)


def label_columns(table: pa.Table) -> list[str]:
    """What looks ahead: the labels and the forward returns they are made of."""
    return [c for c in table.column_names if c.startswith(("label_", "fwd_return_"))]


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    """Every label column permuted by the same seeded permutation of the rows; features untouched."""
    perm = pa.array(np.random.default_rng(seed).permutation(table.num_rows))
    for c in label_columns(table):
        table = table.set_column(table.schema.get_field_index(c), c, pc.take(table[c], perm))
    return table


def learnable(table: pa.Table) -> pa.Table:
    """Labels the features determine and the naive baselines do not: up := the price above its
    5-minute mean (r_sma_5m > 0; not momentum_15m > 0, which is the last-direction baseline
    itself); the large-move label := |return_pct| in its top decile. Null where the real label is
    null (no label yet)."""
    def relabel(t: pa.Table, name: str, values: np.ndarray) -> pa.Table:
        null = np.array([v is None for v in t[name].to_pylist()])
        col = pa.array(values.astype(np.int64), mask=null).cast(t[name].type)
        return t.set_column(t.schema.get_field_index(name), name, col)

    table = relabel(table, "label_up", table["r_sma_5m"].to_numpy(zero_copy_only=False) > 0)
    size = np.abs(table["return_pct"].to_numpy(zero_copy_only=False))
    return relabel(table, ANOMALY_LABEL, size > np.quantile(size, 0.9))


def _write(path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def variants(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("shuffled")
    resources = model_resources(home, COINS)
    lh = resources["lakehouse"]
    load_market(lh, simulated_ticks(COINS, MINUTES, seed=5, end=END))
    assert dg.materialize([training_data.training_set], resources=resources).success
    path = training_set_path(lh)
    original = pq.read_table(path)
    out = {"original": original}
    for name, table in (("shuffled", shuffled(original, SEED)), ("control", learnable(original))):
        _write(path, table)
        mlf = MlflowResource(home=str(home / name))
        result = materialize([models.trend_model, models.anomaly_model], dict(resources, mlflow=mlf),
                             small_ops("trend_model", "anomaly_model"))
        out[name] = {"result": result, "mlflow": mlf, "table": table}
    return out


def _run_metrics(variant: dict, spec: ModelSpec) -> dict[str, float]:
    md = metadata(variant["result"], spec.name)
    assert "mlflow_run_id" in md, f"{spec.name} did not train: {md}"
    return variant["mlflow"].client().get_run(md["mlflow_run_id"]).data.metrics


def _margin(spec: ModelSpec) -> float:
    return float(spec.config().gate_margin)  # the asset's default config, which the runs use


def test_the_shuffle_keeps_features_and_label_counts_and_breaks_the_link(variants):
    orig, shuf = variants["original"], variants["shuffled"]["table"]
    labels = label_columns(orig)
    assert {"label_up", "fwd_return_h", ANOMALY_LABEL} <= set(labels)
    for c in orig.column_names:
        if c in labels:  # the same values, in another order
            assert sorted(orig[c].to_pylist(), key=repr) == sorted(shuf[c].to_pylist(), key=repr)
            if len(set(orig[c].to_pylist())) > 1:  # (fwd_return_24h is all null on 20 hours)
                assert orig[c].to_pylist() != shuf[c].to_pylist(), c
        else:
            assert orig[c].equals(shuf[c]), c
    up = np.asarray(shuf["label_up"].to_pylist(), dtype=float)
    mom = orig["r_sma_5m"].to_numpy(zero_copy_only=False)
    ok = ~np.isnan(up)
    assert abs(np.corrcoef(up[ok], mom[ok])[0, 1]) < 0.1  # no link left to learn


@pytest.mark.parametrize("spec", [TREND_MODEL, ANOMALY_MODEL],
                         ids=lambda s: s.name)
def test_shuffled_labels_are_not_promoted(variants, spec):
    v = variants["shuffled"]
    assert v["result"].success  # a rejection is a WARN, the run stays green
    gate = gates(v["result"])[f"{spec.name}_gate"]
    assert gate.metadata["outcome"].value == "rejected", gate.description
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    mlf = v["mlflow"]
    assert champion_version(mlf, mlf.registered_name(spec.name)) is None
    m = _run_metrics(v, spec)
    lo, hi = m[f"lift_{spec.metric}_ci_low"], m[f"lift_{spec.metric}_ci_high"]
    assert lo <= _margin(spec), (spec.name, lo, hi)  # no better than the strongest baseline
    assert lo <= m[f"lift_{spec.metric}"] <= hi


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_positive_control_is_promoted(variants, spec):
    v = variants["control"]
    assert v["result"].success
    gate = gates(v["result"])[f"{spec.name}_gate"]
    assert gate.passed and gate.metadata["outcome"].value == "promoted", gate.description
    mlf = v["mlflow"]
    assert champion_version(mlf, mlf.registered_name(spec.name)) == "1"
    m = _run_metrics(v, spec)
    assert m[f"lift_{spec.metric}_ci_low"] > max(_margin(spec), 0.0), m
