"""The Dagster storage purge on a real instance (the repo's dagster.yaml: consolidated sqlite
event log): it deletes old finished runs with their events and compute logs, and keeps what the
catalog and checks pages show, unfinished runs and recent failures."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from crypto_assets.defs.run_purge import purge_runs

REPO = Path(__file__).resolve().parents[1]


@dg.asset
def a() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"n": 1})


@dg.asset_check(asset=a)
def a_ok() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset
def b() -> None:
    return None


class Boom(dg.Config):
    fail: bool = False


@dg.asset
def c(config: Boom) -> None:
    if config.fail:
        raise RuntimeError("boom")


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the consolidated event log lives in $DAGSTER_HOME
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _run(instance, selection, run_config=None):
    res = dg.materialize([a, b, c, a_ok], instance=instance, selection=selection, run_config=run_config or {},
                         raise_on_error=False)
    return res.run_id


def test_purge_keeps_latest_results_and_recent_failures(instance):
    old_a = _run(instance, ["a"])                     # superseded by latest_a
    latest_b = _run(instance, ["b"])                  # the only materialization of b
    latest_a = _run(instance, ["a"])                  # newest a and newest a_ok
    plain_c = _run(instance, ["c"])
    failed = _run(instance, ["c"], {"ops": {"c": {"config": {"fail": True}}}})  # a failure; c's latest is plain_c
    assert instance.get_run_by_id(failed).status == dg.DagsterRunStatus.FAILURE
    newest_c = _run(instance, ["c"])
    assert instance.compute_log_manager  # compute logs exist for the old run before the purge
    keys = [dg.AssetKey("a"), dg.AssetKey("b"), dg.AssetKey("c")]
    checks = [dg.AssetCheckKey(dg.AssetKey("a"), "a_ok")]

    # nothing is old yet: nothing goes
    assert purge_runs(instance, keys, checks, keep_hours=24).deleted == []

    later = datetime.now(UTC) + timedelta(days=2)
    res = purge_runs(instance, keys, checks, keep_hours=24, failed_keep_days=7, now=later)
    assert set(res.deleted) == {old_a, plain_c}
    for run_id in (old_a, plain_c):
        assert instance.get_run_by_id(run_id) is None
        assert instance.all_logs(run_id) == []
    for run_id in (latest_a, latest_b, failed, newest_c):
        assert instance.get_run_by_id(run_id) is not None
    assert instance.get_latest_materialization_event(dg.AssetKey("a")).run_id == latest_a
    assert instance.get_latest_materialization_event(dg.AssetKey("b")).run_id == latest_b
    assert res.protected_latest == 3 and res.kept_failed == 1

    # once the failure is older than failed_keep_days it goes too; the latest results never do
    much_later = datetime.now(UTC) + timedelta(days=10)
    res = purge_runs(instance, keys, checks, keep_hours=24, failed_keep_days=7, now=much_later)
    assert res.deleted == [failed]
    assert {r.dagster_run.run_id for r in instance.get_run_records()} == {latest_a, latest_b, newest_c}


def test_purge_is_bounded_per_call(instance):
    runs = [_run(instance, ["b"]) for _ in range(4)]
    later = datetime.now(UTC) + timedelta(days=2)
    keys = [dg.AssetKey("b")]
    first = purge_runs(instance, keys, [], keep_hours=1, max_deletes=2, now=later)
    assert first.deleted == runs[:2]  # oldest first
    second = purge_runs(instance, keys, [], keep_hours=1, max_deletes=2, now=later)
    assert second.deleted == [runs[2]]  # runs[3] holds b's latest materialization
    assert [r.dagster_run.run_id for r in instance.get_run_records()] == [runs[3]]


def test_maintenance_job_runs_in_definitions(tmp_path):
    from crypto_assets.definitions import defs
    from crypto_assets.resources.mlflow import MlflowResource

    job = defs.resolve_job_def("maintenance_job")
    with dg.DagsterInstance.ephemeral() as inst:
        result = job.execute_in_process(instance=inst, resources={"mlflow": MlflowResource(home=str(tmp_path))})
    assert result.success
    assert result.output_for_node("purge_dagster_storage") == 0
    assert defs.resolve_schedule_def("maintenance_schedule").job_name == "maintenance_job"


def test_dagster_dev_log_rotates_and_stays_bounded(tmp_path):
    import io

    from crypto_assets.ops.processes import RotatingLogPump

    lines = [f"line {i:05d} ".encode() + b"x" * 90 + b"\n" for i in range(1000)]  # 100 bytes each
    pump = RotatingLogPump(tmp_path / "dev.log", max_bytes=10_000, keep=2)
    pump.pump(io.BytesIO(b"".join(lines)))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["dev.log", "dev.log.1", "dev.log.2"]
    assert all((tmp_path / f).stat().st_size <= 10_000 for f in files)
    # the newest lines are kept, in order, across the rotated files
    kept = b"".join((tmp_path / f).read_bytes() for f in ["dev.log.2", "dev.log.1", "dev.log"])
    assert kept == b"".join(lines)[-len(kept):] and kept.endswith(lines[-1])


def test_mlflow_prune_keeps_newest_and_champion_and_removes_artifacts(tmp_path):
    from crypto_assets.ml.retention import prune_model_versions
    from crypto_assets.resources.mlflow import MlflowResource

    mlf = MlflowResource(home=str(tmp_path))
    mlflow = mlf.activate()
    client = mlf.client()
    name = mlf.registered_name("trend_model")
    client.create_registered_model(name)
    exp = mlf.experiment_id("trend_model")
    runs = []
    for i in range(7):
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_dict({"i": i}, "model/coefficients.json")
        runs.append(run.info.run_id)
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", "2")
    other = client.create_registered_model("someone_else.model")  # not ours: untouched
    assert other is not None

    res = prune_model_versions(mlf, keep_versions=3)
    left = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    assert left == [2, 5, 6, 7]
    assert res.versions_deleted == {name: ["4", "3", "1"]}
    assert sorted(res.runs_deleted) == sorted([runs[0], runs[2], runs[3]])
    artifact_root = mlf.artifact_root / "trend_model"
    for i, run_id in enumerate(runs):
        present = any(p.is_file() for p in (artifact_root / run_id).rglob("*"))  # gc leaves the empty run dir
        assert present == (i in (1, 4, 5, 6)), (i, present)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert client.get_registered_model("someone_else.model") is not None
