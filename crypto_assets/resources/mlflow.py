"""MLflow as a ConfigurableResource: plain `mlflow` (dagster-mlflow is a legacy op-era resource).

Tracking defaults to a sqlite store under $CRYPTO_HOME/mlflow with artifacts beside it; every
experiment is created with an explicit artifact location so nothing lands in ./mlruns.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field


class MlflowResource(dg.ConfigurableResource):
    tracking_uri: str = Field(default="", description="empty: sqlite under <home>/mlflow")
    home: str = Field(default="var", description="CRYPTO_HOME")
    experiment_prefix: str = "crypto_assets"

    @property
    def artifact_root(self) -> Path:
        return Path(self.home).resolve() / "mlflow" / "artifacts"

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        db = Path(self.home).resolve() / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"

    def activate(self):
        """Point the mlflow module at this store and return it."""
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        mlflow.set_registry_uri(self.uri())
        return mlflow

    def client(self):
        from mlflow.tracking import MlflowClient

        self.activate()
        return MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    def experiment_id(self, model_name: str) -> str:
        client = self.client()
        name = f"{self.experiment_prefix}/{model_name}"
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = self.artifact_root / model_name
        location.mkdir(parents=True, exist_ok=True)
        if self.tracking_uri and not self.tracking_uri.startswith("sqlite"):
            return client.create_experiment(name)  # a tracking server owns its artifact store
        return client.create_experiment(name, artifact_location=location.as_uri())

    def registered_name(self, model_name: str) -> str:
        return f"{self.experiment_prefix}.{model_name}"

    def run_url(self, experiment_id: str, run_id: str) -> str:
        if self.tracking_uri.startswith("http"):
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"{self.uri()} experiment {experiment_id} run {run_id}"
