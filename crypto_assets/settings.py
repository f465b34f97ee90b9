"""The one place that reads the environment and builds the resources for it (DESIGN.md §9).

Assets never read env vars; they get resources. Every setting has an embedded default, so a
fresh checkout runs against the embedded broker, a DuckDB file and sqlite MLflow under ./var.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from crypto_assets.contract import DEFAULT_COIN_IDS
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.resources.lakehouse import LakehouseResource


def crypto_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CRYPTO_HOME") or "var").resolve()


def coin_ids(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    raw = env.get("COINS", "")
    ids = [c.strip().lower() for c in raw.split(",") if c.strip()]
    return ids or list(DEFAULT_COIN_IDS)


def kafka_resource(env: Mapping[str, str] | None = None) -> KafkaResource:
    env = os.environ if env is None else env
    secret = dg.EnvVar("KAFKA_SASL_PASSWORD") if env.get("KAFKA_SASL_PASSWORD") else None
    return KafkaResource(
        bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        home=str(crypto_home(env)),
        security_protocol=env.get("KAFKA_SECURITY_PROTOCOL") or None,
        sasl_mechanism=env.get("KAFKA_SASL_MECHANISM") or None,
        sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
        sasl_password=secret,
        ssl_ca_location=env.get("KAFKA_SSL_CA_LOCATION") or None,
    )


def lakehouse_resource(env: Mapping[str, str] | None = None) -> LakehouseResource:
    return LakehouseResource(home=str(crypto_home(env)), coins=coin_ids(env))


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    return {
        "kafka": kafka_resource(env),
        "lakehouse": lakehouse_resource(env),
    }
