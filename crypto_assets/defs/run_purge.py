"""Keep the Dagster instance at a steady size: delete old runs through public instance APIs.

Dagster never prunes runs (dagster#33785; `retention:` in dagster.yaml covers sensor and
schedule ticks only). Live mode starts an incremental run every couple of minutes and a training
run every hour, so without a purge the instance grows for as long as the pipeline runs. The purge
deletes finished runs older than `keep_hours` (their events, their index rows and their compute
logs) and never deletes:
- a run that holds the latest materialization of any asset, or the latest evaluation of any
  asset check (the catalog and the checks page keep showing the current state),
- a run that is not finished,
- a failed or canceled run younger than `failed_keep_days`, up to the newest `max_failed`
  of them (failures stay inspectable; a run that fails every few seconds cannot fill the disk).
At most `max_deletes` runs go per call, so one purge is bounded and a backlog drains over calls.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_assets.resources.mlflow import MlflowResource

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass
class PurgeResult:
    deleted: list[str] = field(default_factory=list)
    protected_latest: int = 0
    kept_failed: int = 0
    examined: int = 0


def latest_run_ids(instance: dg.DagsterInstance, asset_keys: Iterable[dg.AssetKey],
                   check_keys: Iterable[dg.AssetCheckKey]) -> set[str]:
    """Runs holding the newest materialization of an asset or the newest evaluation of a check."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    out: set[str] = set()
    for key in asset_keys:
        event = instance.get_latest_materialization_event(key)
        if event is not None:
            out.add(event.run_id)
    # EventLogStorage.get_asset_check_execution_history is the storage's API for the checks page
    # (no @public wrapper on the instance); test_storage_purge fails loudly if it changes.
    done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    for key in check_keys:
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1, status=done)
        out.update(r.run_id for r in records)
    return out


def purge_runs(
    instance: dg.DagsterInstance,
    asset_keys: Sequence[dg.AssetKey],
    check_keys: Sequence[dg.AssetCheckKey],
    *,
    keep_hours: float = 24.0,
    failed_keep_days: float = 7.0,
    max_failed: int = 200,
    max_deletes: int = 5000,
    now: datetime | None = None,
) -> PurgeResult:
    now = now or datetime.now(UTC)
    protected = latest_run_ids(instance, asset_keys, check_keys)
    recent_failed = {
        r.dagster_run.run_id
        for r in instance.get_run_records(
            filters=dg.RunsFilter(statuses=list(FAILED), updated_after=now - timedelta(days=failed_keep_days)),
            limit=max_failed,
        )
    }
    result = PurgeResult()
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED, updated_before=now - timedelta(hours=keep_hours)),
        limit=max_deletes + len(protected) + len(recent_failed),
        order_by="update_timestamp",
        ascending=True,
    )
    for record in records:
        run_id = record.dagster_run.run_id
        result.examined += 1
        if run_id in protected:
            result.protected_latest += 1
            continue
        if run_id in recent_failed:
            result.kept_failed += 1
            continue
        if len(result.deleted) >= max_deletes:
            break
        instance.delete_run(run_id)
        instance.compute_log_manager.delete_logs(prefix=[run_id])
        result.deleted.append(run_id)
    return result


class PurgeConfig(dg.Config):
    keep_hours: float = 24.0
    failed_keep_days: float = 7.0
    max_failed: int = 200
    max_deletes: int = 5000


@dg.op(description="Delete finished runs older than keep_hours, keeping each asset's latest materialization and "
       "each check's latest result, unfinished runs and recent failures.")
def purge_dagster_storage(context: dg.OpExecutionContext, config: PurgeConfig) -> dg.Output[int]:
    from crypto_assets.definitions import defs  # this code location's own checks (import at use: no cycle)

    check_keys = list(defs.resolve_asset_graph().asset_check_keys)
    # every asset the instance has events for, including ones since removed from the code
    result = purge_runs(
        context.instance, list(context.instance.get_asset_keys()), check_keys,
        keep_hours=config.keep_hours, failed_keep_days=config.failed_keep_days,
        max_failed=config.max_failed, max_deletes=config.max_deletes,
    )
    context.log.info(f"deleted {len(result.deleted)} runs; kept {result.protected_latest} holding latest results, "
                     f"{result.kept_failed} recent failures")
    return dg.Output(len(result.deleted), metadata={
        "runs_deleted": len(result.deleted), "runs_examined": result.examined,
        "kept_latest_results": result.protected_latest, "kept_recent_failures": result.kept_failed,
        "keep_hours": config.keep_hours,
    })


class MlflowPruneConfig(dg.Config):
    keep_versions: int = 5


@dg.op(description="Delete registered model versions beyond the newest keep_versions (never the champion), with "
       "their MLflow runs and artifacts.")
def prune_mlflow(context: dg.OpExecutionContext, config: MlflowPruneConfig, mlflow: MlflowResource) -> dg.Output[int]:
    from crypto_assets.ml.retention import prune_model_versions

    result = prune_model_versions(mlflow, config.keep_versions)
    deleted = sum(len(v) for v in result.versions_deleted.values())
    return dg.Output(deleted, metadata={"versions_deleted": deleted, "runs_deleted": len(result.runs_deleted),
                                        "versions_kept": result.versions_kept, "keep_versions": config.keep_versions})
