"""Keep the MLflow registry and its artifacts bounded: every retrain registers a new version of
each model (hourly: ~144 a day, the forest's artifacts a few MB each), and MLflow deletes nothing.

Per registered model of this project the newest `keep_versions` versions and every version that
carries an alias (the champion) are kept; older versions are deleted with their training runs,
and the runs are then removed for good with `mlflow gc` (database rows and artifact files), which
soft-deleted runs otherwise keep forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crypto_assets.resources.mlflow import MlflowResource


@dataclass
class PruneResult:
    versions_deleted: dict[str, list[str]] = field(default_factory=dict)
    runs_deleted: list[str] = field(default_factory=list)
    versions_kept: int = 0


def prune_model_versions(mlf: MlflowResource, keep_versions: int = 5) -> PruneResult:
    client = mlf.client()
    result = PruneResult()
    for model in client.search_registered_models(filter_string=f"name LIKE '{mlf.experiment_prefix}.%'"):
        versions = sorted(client.search_model_versions(f"name = '{model.name}'"), key=lambda v: int(v.version),
                          reverse=True)
        aliased = {str(v) for v in (model.aliases or {}).values()}
        keep = {str(v.version) for v in versions[:keep_versions]} | aliased
        result.versions_kept += len([v for v in versions if str(v.version) in keep])
        kept_runs = {v.run_id for v in versions if str(v.version) in keep}
        for v in versions:
            if str(v.version) in keep:
                continue
            client.delete_model_version(model.name, str(v.version))
            result.versions_deleted.setdefault(model.name, []).append(str(v.version))
            if v.run_id and v.run_id not in kept_runs and v.run_id not in result.runs_deleted:
                client.delete_run(v.run_id)
                result.runs_deleted.append(v.run_id)
    if result.runs_deleted:
        _gc(mlf, result.runs_deleted)
    return result


def _gc(mlf: MlflowResource, run_ids: list[str]) -> None:
    """`mlflow gc` for these runs: the documented way to delete runs and artifacts for good."""
    from mlflow.cli import gc

    args = ["--backend-store-uri", mlf.uri(), "--run-ids", ",".join(run_ids)]
    gc.main(args=args, standalone_mode=False)
