"""The one place that reads the environment, typed, and builds the resources for it.

Assets never read env vars; they get resources. The operator commands (crypto_assets.ops) read
the environment through these functions too; they only *write* it, for the processes they start.
Resource modules are imported where a resource is built, so this module stays a cheap leaf that
even crypto_assets.faults can import. Every setting has an embedded default, so a
fresh checkout runs against the embedded broker, a DuckDB file and sqlite MLflow under ./var.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS

if TYPE_CHECKING:
    from crypto_assets.resources.kafka import KafkaResource
    from crypto_assets.resources.lakehouse import LakehouseResource


# The Dagster concurrency pool of the steps that write warehouse.duckdb: DuckDB allows one
# read-write process per file, and dagster.yaml limits every pool to one slot.
DUCKDB_POOL = "duckdb_writer"


def crypto_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CRYPTO_HOME") or "var").resolve()


def coin_ids(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    raw = env.get("COINS", "")
    ids = [c.strip().lower() for c in raw.split(",") if c.strip()]
    return ids or list(DEFAULT_COIN_IDS)


def kafka_resource(env: Mapping[str, str] | None = None) -> KafkaResource:
    from crypto_assets.resources.kafka import KafkaResource

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
    from crypto_assets.resources.lakehouse import LakehouseResource

    return LakehouseResource(home=str(crypto_home(env)), coins=coin_ids(env))


def spark_config(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """local[2] by default; SPARK_MASTER=spark://spark-master:7077 switches to a cluster."""
    env = os.environ if env is None else env
    return {
        "spark.master": env.get("SPARK_MASTER") or "local[2]",
        "spark.app.name": "crypto_assets",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": env.get("SPARK_UI_ENABLED") or "false",
        "spark.sql.shuffle.partitions": env.get("SPARK_SHUFFLE_PARTITIONS") or "4",
        "spark.driver.memory": env.get("SPARK_DRIVER_MEMORY") or "2g",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
    }


def spark_resource(env: Mapping[str, str] | None = None):
    from dagster_pyspark import LazyPySparkResource

    return LazyPySparkResource(spark_config=spark_config(env))


def mlflow_resource(env: Mapping[str, str] | None = None):
    from crypto_assets.resources.mlflow import MlflowResource

    env = os.environ if env is None else env
    return MlflowResource(tracking_uri=env.get("MLFLOW_TRACKING_URI") or "", home=str(crypto_home(env)))


def priority_resource(env: Mapping[str, str] | None = None):
    from crypto_assets.resources.priority import ComputePriorityResource

    env = os.environ if env is None else env
    return ComputePriorityResource(nice=int(env.get("TRAINING_NICE") or 10))


def exchange_rest_resource(env: Mapping[str, str] | None = None):
    from crypto_assets.resources.exchanges import ExchangeRestResource

    s = exchange_settings(env)
    return ExchangeRestResource(coinbase_rest_url=s.coinbase_rest_url, binance_rest_url=s.binance_rest_url,
                                coinbase_products=list(s.coinbase_products), binance_symbols=list(s.binance_symbols))


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    return {
        "exchanges": exchange_rest_resource(env),
        "kafka": kafka_resource(env),
        "lakehouse": lakehouse_resource(env),
        "pyspark": spark_resource(env),
        "mlflow": mlflow_resource(env),
        "compute_priority": priority_resource(env),
    }


@dataclass(frozen=True)
class AutomationSettings:
    """Sensor/schedule knobs. CRYPTO_AUTOMATION=on starts them by default (live mode sets it);
    otherwise they are defined but stopped until switched on in the UI."""

    default_on: bool = False
    interval_s: int = 2  # the daemon's sensor loop adds up to 5 s
    min_messages: int = 500
    max_wait_seconds: float = 10.0
    drain_seconds: float = 120.0
    retrain_cron: str = "0 * * * *"
    predictions_cron: str = "*/5 * * * *"
    maintenance_cron: str = "*/30 * * * *"
    run_retention_hours: float = 24.0
    report_cron: str = "*/15 * * * *"  # market_report's own schedule (report_schedule)
    report_keep: int = 96  # timestamped reports the schedule keeps: a day at the default cron

    def as_dict(self) -> dict:
        return asdict(self)


def automation_settings(env: Mapping[str, str] | None = None) -> AutomationSettings:
    env = os.environ if env is None else env
    d = AutomationSettings()
    return AutomationSettings(
        default_on=(env.get("CRYPTO_AUTOMATION") or "").lower() in ("1", "on", "true", "yes"),
        interval_s=int(env.get("SENSOR_INTERVAL_SECONDS") or d.interval_s),
        min_messages=int(env.get("BACKLOG_MIN_MESSAGES") or d.min_messages),
        max_wait_seconds=float(env.get("BACKLOG_MAX_WAIT_SECONDS") or d.max_wait_seconds),
        drain_seconds=float(env.get("INCREMENTAL_DRAIN_SECONDS") or d.drain_seconds),
        retrain_cron=env.get("RETRAIN_CRON") or d.retrain_cron,
        predictions_cron=env.get("PREDICTIONS_CRON") or d.predictions_cron,
        maintenance_cron=env.get("MAINTENANCE_CRON") or d.maintenance_cron,
        run_retention_hours=float(env.get("RUN_RETENTION_HOURS") or d.run_retention_hours),
        report_cron=env.get("REPORT_CRON") or d.report_cron,
        report_keep=int(env.get("REPORT_KEEP") or d.report_keep),
    )


@dataclass(frozen=True)
class CoinGeckoSettings:
    """Where `produce --source coingecko` polls: the public API by default, Pro with a key."""

    base_url: str | None = None  # None: the public (or Pro) default of producers.coingecko
    api_key: str | None = None
    pro: bool = False


def coingecko_settings(env: Mapping[str, str] | None = None) -> CoinGeckoSettings:
    env = os.environ if env is None else env
    return CoinGeckoSettings(
        base_url=env.get("COINGECKO_BASE_URL") or None,
        api_key=env.get("COINGECKO_API_KEY") or None,
        pro=bool(env.get("COINGECKO_PRO")),
    )


# The exchanges' public endpoints (overridden in tests by local servers, in production by a proxy).
COINBASE_WS_URL = "wss://ws-feed.exchange.coinbase.com"
COINBASE_REST_URL = "https://api.exchange.coinbase.com"
BINANCE_WS_URL = "wss://stream.binance.com:9443"
BINANCE_REST_URL = "https://api.binance.com"
DEFAULT_COINBASE_PRODUCTS = ("BTC-USD", "ETH-USD", "SOL-USD")
DEFAULT_BINANCE_SYMBOLS = ("btcusdt", "ethusdt", "solusdt")
# First day of the klines_1m partitions (a fixed date: a moving start would rename partitions).
DEFAULT_KLINES_START_DATE = "2025-01-01"
# The Dagster pool of the history backfill's fetching step (one slot: one day fetched at a time).
EXCHANGE_HISTORY_POOL = "exchange_history"


@dataclass(frozen=True)
class ExchangeSettings:
    """Where the trade sources (`produce --source coinbase|binance`) connect, and what they follow."""

    coinbase_ws_url: str = COINBASE_WS_URL
    coinbase_rest_url: str = COINBASE_REST_URL
    binance_ws_url: str = BINANCE_WS_URL
    binance_rest_url: str = BINANCE_REST_URL
    coinbase_products: tuple[str, ...] = DEFAULT_COINBASE_PRODUCTS
    binance_symbols: tuple[str, ...] = DEFAULT_BINANCE_SYMBOLS
    klines_start_date: str = DEFAULT_KLINES_START_DATE  # YYYY-MM-DD, the first klines_1m partition


def _csv(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    items = tuple(x.strip() for x in (value or "").split(",") if x.strip())
    return items or default


def exchange_settings(env: Mapping[str, str] | None = None) -> ExchangeSettings:
    env = os.environ if env is None else env
    return ExchangeSettings(
        coinbase_ws_url=env.get("COINBASE_WS_URL") or COINBASE_WS_URL,
        coinbase_rest_url=env.get("COINBASE_REST_URL") or COINBASE_REST_URL,
        binance_ws_url=env.get("BINANCE_WS_URL") or BINANCE_WS_URL,
        binance_rest_url=env.get("BINANCE_REST_URL") or BINANCE_REST_URL,
        coinbase_products=_csv(env.get("COINBASE_PRODUCTS"), DEFAULT_COINBASE_PRODUCTS),
        binance_symbols=_csv(env.get("BINANCE_SYMBOLS"), DEFAULT_BINANCE_SYMBOLS),
        klines_start_date=env.get("KLINES_START_DATE") or DEFAULT_KLINES_START_DATE,
    )


def dagster_home(home: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """$DAGSTER_HOME, or <home or CRYPTO_HOME>/dagster (what the CLI, demo and live mode use)."""
    env = os.environ if env is None else env
    return Path(env.get("DAGSTER_HOME") or (home or crypto_home(env)) / "dagster").resolve()


def kafka_bootstrap_override(env: Mapping[str, str] | None = None) -> str | None:
    """KAFKA_BOOTSTRAP_SERVERS when set: an external broker instead of the embedded one."""
    env = os.environ if env is None else env
    return env.get("KAFKA_BOOTSTRAP_SERVERS") or None


FAULT_ENV_VAR = "CRYPTO_ASSETS_FAULT"


def fault_point(env: Mapping[str, str] | None = None) -> str | None:
    """The crash-injection point the exactly-once tests ask for (crypto_assets.faults), if any."""
    env = os.environ if env is None else env
    return env.get(FAULT_ENV_VAR) or None


@dataclass(frozen=True)
class Webhook:
    """One alert receiver; `kind` "json" gets the generic (signed) JSON, "slack" Slack's format."""

    name: str
    url: str
    kind: str = "json"


@dataclass(frozen=True)
class AlertSettings:
    """Where `crypto-assets alerts` and the run-failure sensor deliver (crypto_assets/delivery)."""

    webhooks: tuple[Webhook, ...] = ()
    secret: str | None = None  # HMAC-SHA256 key of the generic JSON's signature header
    ledger_path: Path = Path("var/alerts/deliveries.sqlite")
    retention_days: float = 35.0  # > the alerts topic's 30 days (crypto_assets/delivery/ledger.py)
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    timeout_s: float = 10.0


def alert_settings(env: Mapping[str, str] | None = None) -> AlertSettings:
    """ALERT_WEBHOOKS=name=url,name2=url2 (generic JSON), SLACK_WEBHOOK_URL (a Slack incoming
    webhook, named "slack"), ALERT_WEBHOOK_SECRET; retry knobs ALERT_MAX_ATTEMPTS,
    ALERT_BACKOFF_BASE_SECONDS, ALERT_BACKOFF_CAP_SECONDS, ALERT_TIMEOUT_SECONDS."""
    env = os.environ if env is None else env
    d = AlertSettings()
    hooks: list[Webhook] = []
    for i, item in enumerate(x.strip() for x in (env.get("ALERT_WEBHOOKS") or "").split(",")):
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or "://" in name:
            name, url = f"webhook{i + 1}", item
        hooks.append(Webhook(name.strip(), url.strip()))
    if env.get("SLACK_WEBHOOK_URL"):
        hooks.append(Webhook("slack", env["SLACK_WEBHOOK_URL"].strip(), "slack"))
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise ValueError(f"ALERT_WEBHOOKS: webhook names must be unique (the ledger is keyed by them): {names}")
    return AlertSettings(
        webhooks=tuple(hooks),
        secret=env.get("ALERT_WEBHOOK_SECRET") or None,
        ledger_path=crypto_home(env) / "alerts" / "deliveries.sqlite",
        retention_days=float(env.get("ALERT_LEDGER_RETENTION_DAYS") or d.retention_days),
        max_attempts=int(env.get("ALERT_MAX_ATTEMPTS") or d.max_attempts),
        backoff_base_s=float(env.get("ALERT_BACKOFF_BASE_SECONDS") or d.backoff_base_s),
        backoff_cap_s=float(env.get("ALERT_BACKOFF_CAP_SECONDS") or d.backoff_cap_s),
        timeout_s=float(env.get("ALERT_TIMEOUT_SECONDS") or d.timeout_s),
    )
