"""Failed runs (and the blocking checks that failed in them) delivered like anomalies: the same
webhooks, payloads, sender and ledger (crypto_assets/delivery), keyed "run:<run id>".

Why not dagster-slack's make_slack_on_run_failure_sensor: it posts through a Slack bot token
and slack_sdk (chat.postMessage), a second credential and dependency for Slack only, without
our generic webhooks, signature, retries or ledger. An incoming-webhook URL is what the alert
consumer already uses, so a failed run reaches exactly the receivers an anomaly does.
"""

from __future__ import annotations

import dagster as dg

from crypto_assets.delivery.ledger import Ledger
from crypto_assets.delivery.payloads import run_failure_notice
from crypto_assets.delivery.sender import RetryPolicy, deliver
from crypto_assets.settings import AlertSettings, alert_settings

SENSOR_NAME = "run_failure_alerts"


def failed_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """"asset:check" of every blocking check that failed in the run, from its event log."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    out: list[str] = []
    for r in records:
        event = r.event_log_entry.dagster_event
        ev = event.event_specific_data if event is not None else None
        if isinstance(ev, dg.AssetCheckEvaluation) and not ev.passed and ev.blocking:
            name = f"{ev.asset_key.to_user_string()}:{ev.check_name}"
            if name not in out:
                out.append(name)
    return out


def sensor_policy(cfg: AlertSettings) -> RetryPolicy:
    """Short retries: a sensor tick must finish well inside Dagster's 60 s evaluation timeout."""
    return RetryPolicy(max_attempts=min(cfg.max_attempts, 3), base_s=min(cfg.backoff_base_s, 1.0),
                       cap_s=min(cfg.backoff_cap_s, 4.0), timeout_s=min(cfg.timeout_s, 5.0))


def deliver_run_failure(context: dg.RunFailureSensorContext, cfg: AlertSettings) -> dict[str, str | None]:
    run = context.dagster_run
    notice = run_failure_notice(run.run_id, run.job_name, context.failure_event.message or "",
                                failed_blocking_checks(context.instance, run.run_id))
    with Ledger(cfg.ledger_path) as ledger:
        return {w.name: deliver(w, notice, ledger, sensor_policy(cfg), cfg.secret) for w in cfg.webhooks}


def build_run_failure_sensor(default_on: bool) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=SENSOR_NAME,
        description="Deliver each failed run (with its failed blocking checks) to the alert webhooks.",
        default_status=dg.DefaultSensorStatus.RUNNING if default_on else dg.DefaultSensorStatus.STOPPED,
    )
    def run_failure_alerts(context: dg.RunFailureSensorContext):
        cfg = alert_settings()
        if not cfg.webhooks:
            return dg.SkipReason("no alert webhooks configured (ALERT_WEBHOOKS, SLACK_WEBHOOK_URL)")
        states = deliver_run_failure(context, cfg)
        context.log.info(f"run {context.dagster_run.run_id} failure: {states}")
        return None

    return run_failure_alerts
