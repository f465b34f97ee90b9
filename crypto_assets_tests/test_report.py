"""The market report: figures from a small warehouse built without Kafka or Spark, an empty
MLflow, and the model-performance figure from runs logged straight to a temp MLflow."""

from __future__ import annotations

import filecmp
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from crypto_assets.defs.report import market_report
from crypto_assets.report.key_figures import gate_outcomes
from crypto_assets.report.markdown import model_table
from crypto_assets.report.model_history import load_model_history
from crypto_assets.report.model_plot import MODELS_SIZE, plot_model_performance
from crypto_assets.report.plots import CANDLES_SIZE, CORR_SIZE, OVERVIEW_SIZE, save_figure
from crypto_assets.report.publish import STAMP_RE, prune_reports, publish_latest, sweep_stale, write_report
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.report_helpers import DPI, assert_png, md_table, report_metadata, shows
from crypto_assets_tests.silver_helpers import insert_raw_batch, make_ticks

COINS = ["bitcoin", "ethereum", "solana"]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    home = tmp_path_factory.mktemp("report") / "var"
    lh = LakehouseResource(home=str(home), coins=COINS)
    ticks = make_ticks(600, COINS, start=datetime.now(UTC) - timedelta(hours=4), seed=3)
    # one unmistakable 24h-volume jump (+400 %) on bitcoin in the middle of the window
    btc = ticks["coin_id"] == "bitcoin"
    idx = [k for k, b in enumerate(btc) if b][300]
    vol = ticks["volume_24h_usd"].to_list()
    vol[idx] = vol[idx] * 5.0
    ticks = ticks.with_columns(volume_24h_usd=np.array(vol))
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        run_incremental(conn, COINS)
        rules = dict(conn.sql("SELECT rule, count(*) FROM anomalies GROUP BY 1").fetchall())
    assert rules.get("volume_spike", 0) > 0
    mlf = MlflowResource(home=str(home))
    return {"home": home, "lh": lh, "mlf": mlf}


@pytest.fixture(scope="module")
def first_run(warehouse):
    result = dg.materialize(
        [market_report],
        resources={"lakehouse": warehouse["lh"], "mlflow": warehouse["mlf"]},
        run_config={"ops": {"market_report": {"config": {"hours": 3.0, "dpi": DPI}}}},
    )
    assert result.success
    return result


def test_report_figures_and_markdown(warehouse, first_run):
    md = report_metadata(first_run)
    report_dir = Path(md["report_dir"].value)
    assert report_dir.parent == warehouse["home"].resolve() / "reports"
    assert STAMP_RE.match(report_dir.name)

    files = sorted(p.name for p in report_dir.iterdir())
    assert files == sorted(["report.md", "overview.png", "correlations.png", "models.png",
                            *(f"candles_{c}.png" for c in COINS)])
    for c in COINS:
        assert_png(report_dir / f"candles_{c}.png", CANDLES_SIZE, DPI)
    assert_png(report_dir / "correlations.png", CORR_SIZE, DPI)
    assert_png(report_dir / "overview.png", OVERVIEW_SIZE, DPI)
    assert_png(report_dir / "models.png", MODELS_SIZE, DPI)  # the "no runs yet" page

    text = (report_dir / "report.md").read_text()
    for c in COINS:
        assert c in text
        assert f"](candles_{c}.png)" in text  # relative links work from latest/ too
    assert "](correlations.png)" in text and "](models.png)" in text
    assert "no MLflow model runs yet" in text
    assert "volume_spike" in text

    summary = md["summary"].value
    assert "bitcoin" in summary and str(report_dir / "report.md") in summary
    assert md["preview"].value.startswith("![overview](data:image/png;base64,")
    assert len(md["preview"].value) < 40_000
    assert md["coins"].value == 3
    with warehouse["lh"].connect(read_only=True) as conn:
        in_window = conn.sql("SELECT count(*) FROM anomalies WHERE event_time > "
                             "(SELECT max(minute) FROM ohlcv_1m) - INTERVAL 3 HOUR").fetchall()[0][0]
    assert md["anomalies_in_window"].value == in_window > 0
    assert md["models_with_runs"].value == 0
    assert not (warehouse["home"] / "mlflow" / "mlflow.db").exists()  # an empty store is not created


def test_report_numbers_equal_the_warehouse(warehouse, first_run):
    """Every figure in report.md's coin and correlation tables and its header, against the same
    quantities computed here from clean_ticks (prices, change, volatility from the ticks
    themselves) or read straight from the tables the README names (RSI, anomalies, correlations)."""
    text = (Path(report_metadata(first_run)["report_dir"].value) / "report.md").read_text()
    with warehouse["lh"].connect(read_only=True) as conn:
        ticks = conn.sql("SELECT coin_id, symbol, event_time, price_usd FROM clean_ticks ORDER BY coin_id, event_time").pl()
        end = conn.sql("SELECT max(minute) FROM ohlcv_1m").fetchall()[0][0]
        rsi = dict(conn.sql("SELECT coin_id, arg_max(rsi_14, minute) FROM ohlcv_1m WHERE rsi_14 IS NOT NULL GROUP BY 1").fetchall())
        anomalies = conn.sql("SELECT coin_id, rule, event_time FROM anomalies").fetchall()
        corr = conn.sql("SELECT coin_a, coin_b, window_name, corr, n FROM correlations").fetchall()

    header = next(ln for ln in text.splitlines() if ln.startswith("Generated "))
    assert f"· data up to {end.astimezone(UTC):%Y-%m-%d %H:%M} UTC · candle window 3 h" in header

    rows = md_table(text, "Coins")
    assert [r[0] for r in rows] == [f"{c['symbol'].upper()} ({c['coin_id']})" for c in
                                    ticks.unique("coin_id", keep="first", maintain_order=True).to_dicts()]
    for (_label, price, change, vol, rsi_txt, anom), (coin, g) in zip(rows, ticks.group_by("coin_id", maintain_order=True), strict=True):
        coin = coin[0]
        t, p = g["event_time"].to_list(), g["price_usd"].to_numpy()
        assert shows(price, p[-1]), (coin, price, p[-1])
        # the history is 4 h: the change is from the coin's first tick, labelled with its span
        span_h = (t[-1] - t[0]).total_seconds() / 3600
        m = re.fullmatch(r"([+-][\d.]+) % \(over ([\d.]+)h\)", change)
        assert m and shows(m.group(1), (p[-1] / p[0] - 1) * 100) and m.group(2) == f"{span_h:.1f}", (coin, change)
        # 15-minute volatility: population std of the log returns of the ticks in (t - 15 min, t]
        lr = np.log(p[1:] / p[:-1])
        inside = np.array([ti > t[-1] - timedelta(minutes=15) for ti in t[1:]])
        assert vol.endswith(" %") and shows(vol, lr[inside].std() * 100), (coin, vol)
        assert shows(rsi_txt, rsi[coin])
        by_rule: dict[str, int] = {}
        for c, rule, te in anomalies:
            if c == coin and te > t[-1] - timedelta(hours=24):
                by_rule[rule] = by_rule.get(rule, 0) + 1
        rules = ", ".join(f"{r} {n}" for r, n in sorted(by_rule.items()))
        assert anom == f"{sum(by_rule.values())}" + (f" ({rules})" if rules else ""), (coin, anom)
    assert "volume_spike" in rows[0][5]  # bitcoin's planted spike

    sym = {c: g["symbol"][0] for (c,), g in ticks.group_by("coin_id")}
    values = {(a, b, w): (v, n) for a, b, w, v, n in corr}
    pairs = sorted({(a, b) for a, b, *_ in corr}, key=lambda ab: -abs(values[(*ab, "24h")][0]))
    got = md_table(text, "Top correlations (1-minute returns)")
    assert [r[0] for r in got] == [f"{sym[a].upper()} / {sym[b].upper()}" for a, b in pairs]
    for (_, c24, c7, n24), (a, b) in zip(got, pairs, strict=True):
        assert shows(c24, values[(a, b, "24h")][0]) and shows(c7, values[(a, b, "7d")][0])
        assert int(n24) == values[(a, b, "24h")][1] > 0


def test_key_figures_inline_in_the_materialization(warehouse, first_run):
    """The UI's asset page shows the key figures without opening the report: coins, newest data,
    anomalies in the window, best/worst coin (the report's own change column), gates, a preview."""
    md = report_metadata(first_run)
    with warehouse["lh"].connect(read_only=True) as conn:
        end = conn.sql("SELECT max(minute) FROM ohlcv_1m").fetchall()[0][0]
        n_anom = conn.sql("SELECT count(*) FROM anomalies WHERE event_time > $s",
                          params={"s": end - timedelta(hours=3)}).fetchall()[0][0]
        first_last = conn.sql("SELECT coin_id, arg_min(price_usd, event_time), arg_max(price_usd, event_time) "
                              "FROM clean_ticks GROUP BY 1").fetchall()
    assert md["coins"].value == 3 and md["coins_covered"].value == ", ".join(COINS)
    assert md["anomalies_in_window"].value == n_anom > 0
    assert md["data_up_to"].value == end.timestamp()
    assert md["data_up_to_utc"].value == f"{end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    change = {c: (last / first - 1) * 100 for c, first, last in first_last}  # 4 h of history: from the first tick
    best, worst = max(change, key=lambda c: change[c]), min(change, key=lambda c: change[c])
    assert md["best_coin"].value == f"{best} {change[best]:+.2f}%"
    assert md["worst_coin"].value == f"{worst} {change[worst]:+.2f}%"
    assert md["best_coin_return_pct"].value == pytest.approx(change[best], abs=1e-3)
    assert md["worst_coin_return_pct"].value == pytest.approx(change[worst], abs=1e-3)
    assert md["gate_outcomes"].value == {}  # an empty MLflow: no model runs
    summary = md["summary"]
    assert isinstance(summary, dg.MarkdownMetadataValue)
    assert summary.value.startswith(f"**3 coins** · **{n_anom} anomalies** in 3 h · best **{best} ")
    assert Path(md["report_md"].value).is_file()
    assert md["preview"].value.startswith("![overview](data:image/png;base64,")


def test_latest_mirrors_newest_report(warehouse, first_run):
    first_dir = Path(report_metadata(first_run)["report_dir"].value)
    second = dg.materialize(
        [market_report],
        resources={"lakehouse": warehouse["lh"], "mlflow": warehouse["mlf"]},
        run_config={"ops": {"market_report": {"config": {"hours": 1.0, "dpi": 40, "keep_reports": 5}}}},
    )
    assert second.success
    newest = Path(report_metadata(second)["report_dir"].value)
    assert newest != first_dir and first_dir.exists()
    reports = newest.parent
    stamps = sorted(p.name for p in reports.iterdir() if STAMP_RE.match(p.name))
    assert stamps[-1] == newest.name
    latest = reports / "latest"
    assert latest.is_dir() and not latest.is_symlink()
    cmp = filecmp.dircmp(newest, latest)
    assert sorted(os.listdir(latest)) == sorted(os.listdir(newest))
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    _, mismatch, errors = filecmp.cmpfiles(newest, latest, os.listdir(newest), shallow=False)
    assert not mismatch and not errors
    assert not [p for p in reports.iterdir() if p.name.startswith(".")], "temp dirs left behind"
    with Image.open(latest / "candles_bitcoin.png") as im:
        assert im.size == (round(CANDLES_SIZE[0] * 40), round(CANDLES_SIZE[1] * 40))


def test_publish_latest_replaces_and_recovers(tmp_path):
    reports = tmp_path / "reports"
    a, b = reports / "20260101T000000Z", reports / "20260101T000100Z"
    for d, body in ((a, "A"), (b, "B")):
        d.mkdir(parents=True)
        (d / "report.md").write_text(body)
    publish_latest(a, reports / "latest")
    publish_latest(b, reports / "latest")
    assert (reports / "latest" / "report.md").read_text() == "B"
    # a crash between the two renames leaves only the old copy: the next run restores it
    os.rename(reports / "latest", reports / ".old-latest-dead")
    sweep_stale(reports)
    assert (reports / "latest" / "report.md").read_text() == "B"
    assert prune_reports(reports, 1) == [a.name]
    assert not a.exists() and b.exists() and (reports / "latest").exists()


@pytest.mark.slow  # a real sqlite MLflow store: importing mlflow and creating its schema cost ~15 s of CPU
def test_model_performance_from_mlflow_runs(tmp_path):
    mlf = MlflowResource(home=str(tmp_path))
    mlflow = mlf.activate()
    client = mlf.client()
    run_ids = []
    for auc, base in [(0.55, 0.5), (0.61, 0.5), (0.58, 0.52)]:
        with mlflow.start_run(experiment_id=mlf.experiment_id("trend_model")) as run:
            mlflow.log_metrics({"auc_roc": auc, "baseline_auc_roc": base, "lift_auc_roc": auc - base,
                                "baseline_majority_auc_roc": 0.5, "baseline_last_direction_auc_roc": base,
                                "lift_auc_roc_ci_low": auc - base - 0.07, "lift_auc_roc_ci_high": auc - base + 0.05})
            mlflow.log_params({"baseline_name": "last_direction" if base > 0.5 else "majority", "ci_level": 0.9})
            run_ids.append(run.info.run_id)
    for h, rmse in (("1h", 0.010), ("4h", 0.020), ("1h", 0.009)):
        with mlflow.start_run(experiment_id=mlf.experiment_id("price_model")):
            mlflow.set_tag("horizon", h)
            mlflow.log_metrics({"rmse": rmse, "baseline_rmse": rmse * 1.2})
    with mlflow.start_run(experiment_id=mlf.experiment_id("coin_clusters")):
        mlflow.log_metrics({"silhouette": 0.4, "baseline_silhouette": 0.1})

    # register versions for the trend runs (no logged model needed) and promote v2
    name = mlf.registered_name("trend_model")
    client.create_registered_model(name)
    for rid in run_ids:
        artifact_uri = client.get_run(rid).info.artifact_uri
        assert artifact_uri is not None
        mv = client.create_model_version(name, source=artifact_uri + "/model", run_id=rid)
        client.set_model_version_tag(name, mv.version, "gate", "passed" if str(mv.version) == "2" else "rejected")
    client.set_registered_model_alias(name, "champion", "2")

    series = {s.name: s for s in load_model_history(mlf)}
    assert set(series) == {"trend_model", "price_model_1h", "price_model_4h", "coin_clusters"}
    trend = series["trend_model"]
    assert [p.value for p in trend.points] == [0.55, 0.61, 0.58]
    assert [p.version for p in trend.points] == ["1", "2", "3"]
    assert trend.champion_version == "2" and trend.champion is not None and trend.champion.value == 0.61
    assert [p.gate for p in trend.points] == ["rejected", "passed", "rejected"]
    assert gate_outcomes(list(series.values())) == {  # the latest run's version per model
        "trend_model": "rejected", "price_model_1h": "unregistered", "price_model_4h": "unregistered",
        "coin_clusters": "unregistered"}
    assert [p.value for p in series["price_model_1h"].points] == [0.010, 0.009]
    assert not series["price_model_1h"].higher_is_better
    assert series["coin_clusters"].champion is None

    fig = plot_model_performance(list(series.values()), dpi=DPI)
    out = save_figure(fig, tmp_path / "models.png")
    assert_png(out, MODELS_SIZE, DPI)
    assert "anomaly_model" in fig.get_suptitle()  # listed as "no runs yet"
    table = model_table(list(series.values()))
    assert "| trend_model | auc_roc | v2 | 0.61 vs 0.5 ✓ |" in table
    assert "v3 (rejected)" in table

    # report.md's model table, row by row, against what MLflow itself says
    lh = LakehouseResource(home=str(tmp_path / "var"), coins=COINS)
    with lh.connect() as conn:
        md_text = write_report(conn, mlf, tmp_path, dpi=30).markdown_path.read_text()
    got = {r[0]: r[1:] for r in md_table(md_text, "Models (primary metric vs naive baseline)")}
    assert got == _model_rows_from_mlflow(mlf)
    assert got["trend_model"] == ["auc_roc", "v2", "0.61 vs 0.5 ✓", "v3 (rejected)", "0.58 vs 0.52 ✓", "3"]
    assert got["price_model_1h"] == ["rmse", "none", "–", "unregistered", "0.009 vs 0.0108 ✓", "2"]
    # the baselines table: the latest run's metric, every candidate, the strongest, the lift and its CI
    base = {r[0]: r[1:] for r in md_table(md_text, "Model baselines (latest run; lift over the strongest, block-bootstrap CI)")}
    assert base["trend_model"] == ["auc_roc", "0.58", "last_direction 0.52, majority 0.5", "last_direction 0.52",
                                   "0.06", "90% [-0.01, 0.11]", "rejected"]
    assert base["price_model_1h"][3:6] == ["baseline 0.0108", "–", "–"]  # a run without candidates or an interval
    trend_latest = series["trend_model"].latest
    assert trend_latest is not None and trend_latest.baselines == {"last_direction": 0.52, "majority": 0.5}


@pytest.mark.slow  # a real sqlite MLflow store
def test_a_model_without_champion_alias_has_no_champion(tmp_path):
    """A registered model whose versions never passed their gate has no `champion` alias (MLflow
    raises INVALID_PARAMETER_VALUE for it, not RESOURCE_DOES_NOT_EXIST): the report says no
    champion and still shows the version of each run; a model never registered has none either."""
    mlf = MlflowResource(home=str(tmp_path))
    mlflow = mlf.activate()
    client = mlf.client()
    run_ids = []
    for auc in (0.55, 0.52):
        with mlflow.start_run(experiment_id=mlf.experiment_id("trend_model")) as run:
            mlflow.log_metrics({"auc_roc": auc, "baseline_auc_roc": 0.5})
            run_ids.append(run.info.run_id)
    with mlflow.start_run(experiment_id=mlf.experiment_id("anomaly_model")):
        mlflow.log_metrics({"pr_auc": 0.3, "baseline_pr_auc": 0.1})
    name = mlf.registered_name("trend_model")
    client.create_registered_model(name)
    for rid in run_ids:
        mv = client.create_model_version(name, source=f"{client.get_run(rid).info.artifact_uri}/model", run_id=rid)
        client.set_model_version_tag(name, mv.version, "gate", "rejected")

    series = {s.name: s for s in load_model_history(mlf)}
    assert set(series) == {"trend_model", "anomaly_model"}
    trend = series["trend_model"]
    assert trend.champion_version is None and trend.champion is None
    assert [(p.value, p.version, p.gate) for p in trend.points] == [(0.55, "1", "rejected"), (0.52, "2", "rejected")]
    anomaly = series["anomaly_model"]
    assert anomaly.champion_version is None and [p.version for p in anomaly.points] == [None]
    assert "| trend_model | auc_roc | none |" in model_table(list(series.values()))


def _model_rows_from_mlflow(mlf) -> dict[str, list[str]]:
    """The model table's cells, queried here from the MLflow client: every finished run of each
    experiment (price_model split by its horizon tag) in start order, the champion alias, the
    latest run's registered version and gate tag."""
    client = mlf.client()
    metric_of = {"trend_model": "auc_roc", "anomaly_model": "pr_auc", "price_model": "rmse", "coin_clusters": "silhouette"}
    out = {}
    for exp_name, metric in metric_of.items():
        exp = client.get_experiment_by_name(f"{mlf.experiment_prefix}/{exp_name}")
        if exp is None:
            continue
        groups: dict[str, list] = {}
        for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]):
            if metric in r.data.metrics:
                h = r.data.tags.get("horizon")
                groups.setdefault(f"{exp_name}_{h}" if h else exp_name, []).append(r)
        for name, runs in groups.items():
            registered = mlf.registered_name(name)
            try:
                versions = {v.run_id: v for v in client.search_model_versions(f"name='{registered}'")}
            except Exception:  # noqa: BLE001
                versions = {}
            try:
                champ = client.get_model_version_by_alias(registered, "champion")
            except Exception:  # noqa: BLE001
                champ = None

            def vs(run, metric: str = metric) -> str:
                v, b = run.data.metrics[metric], run.data.metrics.get(f"baseline_{metric}")
                better = (v > b) if metric != "rmse" else (v < b)
                return f"{v:.4g} vs {b:.4g} {'✓' if better else '✗'}"

            latest = runs[-1]
            lv = versions.get(latest.info.run_id)
            latest_label = "unregistered" if lv is None else f"v{lv.version}" + (
                f" ({lv.tags['gate']})" if lv.tags.get("gate") else "")
            champ_run = next((r for r in runs if champ is not None and r.info.run_id == champ.run_id), None)
            out[name] = [metric, f"v{champ.version}" if champ else "none", vs(champ_run) if champ_run else "–",
                         latest_label, vs(latest), str(len(runs))]
    return out


def test_empty_warehouse_still_reports(tmp_path):
    lh = LakehouseResource(home=str(tmp_path / "var"), coins=COINS)
    with lh.connect() as conn:
        res = write_report(conn, MlflowResource(home=str(tmp_path / "var")), lh.root, dpi=30)
    assert sorted(p.name for p in res.report_dir.iterdir()) == ["correlations.png", "models.png", "overview.png", "report.md"]
    assert "no market data yet" in res.markdown_path.read_text()
    assert (lh.root / "reports" / "latest" / "report.md").read_text() == res.markdown_path.read_text()


def test_empty_model_figure_says_so(tmp_path):
    fig = plot_model_performance([], dpi=DPI)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("No MLflow model runs yet" in t for t in texts)
    assert_png(save_figure(fig, tmp_path / "m.png"), MODELS_SIZE, DPI)
