"""`crypto-assets`: run the embedded broker, producers, the demo and a status screen.

Commands build their resources through crypto_assets.settings, exactly as the code location
does, so the CLI and Dagster always agree on where Kafka and the warehouse are.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path

from crypto_assets import settings
from crypto_assets.kafka.embedded_broker import (
    BROKER_FILE,
    EmbeddedBroker,
    read_broker_file,
    remove_broker_file,
    write_broker_file,
)
from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.ops.processes import pid_alive


def _home(args) -> Path:
    if getattr(args, "home", None):
        os.environ["CRYPTO_HOME"] = str(Path(args.home).resolve())
    return settings.crypto_home()


# --------------------------------------------------------------------------------- broker
def cmd_broker(args) -> int:
    home = _home(args)
    if args.stop:
        return _stop_broker(home)
    if args.background:
        return _broker_background(home)
    broker = EmbeddedBroker()
    address = broker.start()
    path = write_broker_file(home, broker)
    print(f"embedded Kafka broker (librdkafka mock cluster) listening on {address}", flush=True)
    print(f"cluster id {broker.cluster_id}; address written to {path}", flush=True)
    print("export KAFKA_BOOTSTRAP_SERVERS=" + address, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        remove_broker_file(home)
        broker.stop()
        print("broker stopped", flush=True)
    return 0


def _broker_background(home: Path) -> int:
    info = read_broker_file(home)
    if info and (bool(info.get("pid")) and pid_alive(int(info["pid"]))):
        print(f"embedded broker already running on {info['bootstrap_servers']} (pid {info['pid']})")
        return 0
    home.mkdir(parents=True, exist_ok=True)
    logf = open(home / "broker.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_assets.ops.cli", "broker", "--home", str(home)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = read_broker_file(home)
        if info and info.get("pid") == proc.pid:
            print(info["bootstrap_servers"])
            print(f"embedded broker started in the background (pid {proc.pid}); stop it with "
                  f"`crypto-assets broker --stop`", file=sys.stderr)
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    print(f"embedded broker failed to start; see {home / 'broker.log'}", file=sys.stderr)
    return 1




def _stop_broker(home: Path) -> int:
    info = read_broker_file(home)
    if not info or not (bool(info.get("pid")) and pid_alive(int(info["pid"]))):
        print("no embedded broker running")
        (home / BROKER_FILE).unlink(missing_ok=True)
        return 0
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    print(f"stopped embedded broker pid {pid}")
    return 0


# --------------------------------------------------------------------------------- produce
def cmd_produce(args) -> int:
    _home(args)
    kafka = settings.kafka_resource()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.source == "coingecko":
        from crypto_assets.producers.coingecko import run_coingecko
        from crypto_assets.producers.coingecko_client import DEFAULT_BASE_URL

        cg = settings.coingecko_settings()
        out = run_coingecko(
            kafka,
            settings.coin_ids(),
            interval_s=args.interval_s if args.interval_s is not None else 60.0,
            base_url=args.base_url or cg.base_url or DEFAULT_BASE_URL,
            api_key=cg.api_key,
            pro=cg.pro,
            max_polls=args.count,
            stop_event=stop,
        )
    elif args.source == "simulate":
        from crypto_assets.durations import parse_duration
        from crypto_assets.producers.simulator.config import SimulatorConfig
        from crypto_assets.producers.simulator.run import run_simulator

        cfg = SimulatorConfig(
            coins=tuple(settings.coin_ids()),
            seed=args.seed,
            rate=args.rate,
            count=args.count,
            bad_ratio=args.bad_ratio,
            history=parse_duration(args.history) if args.history else None,
            interval=parse_duration(args.interval) if args.interval else parse_duration("60s"),
            mode=args.mode,
            trade_rate=args.trade_rate,
            trade_imbalance=args.trade_imbalance,
            trade_bad_ratio=args.trade_bad_ratio,
            trade_window=parse_duration(args.trade_window) if args.trade_window else None,
        )
        out = run_simulator(kafka, cfg, stop_event=stop)
    elif args.source in ("coinbase", "binance"):
        return _produce_trades(args, kafka, stop)
    else:
        from crypto_assets.producers.replay import run_replay

        if not args.file:
            print("--file is required for --source replay", file=sys.stderr)
            return 2
        out = run_replay(kafka, args.file, speed=args.speed, shift_to_now=args.shift_to_now,
                         limit=args.count, stop_event=stop)
    print(json.dumps(out, default=str, indent=2))
    return 0


def _produce_trades(args, kafka, stop: threading.Event) -> int:
    """An exchange's trade stream into crypto_trades until --count trades, --duration or a signal."""
    from dataclasses import asdict

    from crypto_assets.durations import parse_duration
    from crypto_assets.producers.exchanges.healing import GapHealer
    from crypto_assets.producers.exchanges.trade_source import feed_for, run_trade_source
    from crypto_assets.producers.exchanges.trade_stream import SubscriptionRejected

    cfg = settings.exchange_settings()
    wanted = args.products if args.source == "coinbase" else args.symbols
    products = [p.strip() for p in (wanted or "").split(",") if p.strip()] or None
    feed = feed_for(args.source, cfg, products)
    duration = parse_duration(args.duration).total_seconds() if args.duration else None
    healer = GapHealer.from_settings(cfg)
    try:
        out = run_trade_source(kafka, feed, healer=healer.heal, stop_event=stop, max_trades=args.count,
                               duration_s=duration,
                               stats_every_s=args.interval_s if args.interval_s is not None else 60.0,
                               log=lambda line: print(line, flush=True))
    except SubscriptionRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        healer.close()
    out["rest"] = asdict(healer.stats)
    print(json.dumps(out, default=str, indent=2))
    return 0


# --------------------------------------------------------------------------------- topics
def cmd_topics(args) -> int:
    """Create the declared topics on a real cluster (docker-compose's init step)."""
    # the documented import path (the type stubs declare NewTopic in confluent_kafka.cimpl only)
    from confluent_kafka.admin import AdminClient, NewTopic  # pyright: ignore[reportPrivateImportUsage]

    from crypto_assets.kafka.topics import TOPICS

    _home(args)
    kafka = settings.kafka_resource()
    admin = AdminClient(kafka._common())
    existing = set(admin.list_topics(timeout=kafka.timeout_s).topics)
    new = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=args.replication_factor, config=t.config())
        for t in TOPICS
        if t.name not in existing
    ]
    for name, fut in (admin.create_topics(new, operation_timeout=30).items() if new else []):
        fut.result()
        print(f"created topic {name}")
    for t in TOPICS:
        if t.name in existing:
            print(f"topic {t.name} exists")
    return 0


# --------------------------------------------------------------------------------- quarantine-ticks
def cmd_quarantine_ticks(args) -> int:
    """Move clean ticks of one coin to quarantine; the next run recomputes what they fed."""
    from datetime import datetime

    from crypto_assets.transforms.repair import quarantine_clean_ticks

    def ts(text: str) -> datetime:
        t = datetime.fromisoformat(text)
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    _home(args)
    start = ts(args.start)
    end = ts(args.end) if args.end else start
    with settings.lakehouse_resource().connect() as conn:
        moved = quarantine_clean_ticks(conn, args.coin, start, end, args.detail)
    if not moved:
        print(f"no clean tick of {args.coin} between {start} and {end}", file=sys.stderr)
        return 1
    print(f"moved {moved} clean tick(s) of {args.coin} to quarantine (reason manual); the next incremental "
          f"run recomputes its features, candles, hourly stats and anomalies from there")
    return 0


# --------------------------------------------------------------------------------- alerts
def cmd_alerts(args) -> int:
    """Deliver crypto_alerts to the configured webhooks (crypto_assets/delivery) until SIGTERM."""
    from crypto_assets.delivery.consumer import heartbeat_age_s, run_alerts
    from crypto_assets.delivery.ledger import Ledger

    _home(args)
    cfg = settings.alert_settings()
    if args.healthcheck is not None:
        age = heartbeat_age_s(cfg)
        print(f"heartbeat age {age:.1f}s" if age is not None else "no heartbeat yet")
        return 0 if age is not None and age <= args.healthcheck else 1
    if args.dead_letters:
        with Ledger(cfg.ledger_path) as ledger:
            print(json.dumps({"counts": ledger.counts(), "dead_letters": ledger.dead_letters()}, indent=2))
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    out = run_alerts(settings.kafka_resource(), cfg, stop, topic=args.topic, group=args.group,
                     idle_exit_s=args.idle_exit, say=lambda line: print(line, flush=True))
    print(json.dumps(out), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crypto-assets", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--home", help="data root (default $CRYPTO_HOME or ./var)")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="run the embedded Kafka broker (librdkafka mock cluster)")
    b.add_argument("--home")
    b.add_argument("--background", action="store_true", help="start detached and return once it listens")
    b.add_argument("--stop", action="store_true", help="stop the background broker")
    b.set_defaults(func=cmd_broker)

    pr = sub.add_parser("produce", help="write contract ticks to crypto_raw, or exchange trades to crypto_trades")
    pr.add_argument("--home")
    pr.add_argument("--source", choices=["simulate", "coingecko", "replay", "coinbase", "binance"], required=True)
    pr.add_argument("--rate", type=float, default=10.0, help="simulate: messages per second (live mode)")
    pr.add_argument("--count", "--max-trades", dest="count", type=int, default=None,
                    help="messages (simulate/replay), polls (coingecko) or trades (coinbase/binance) before stopping")
    pr.add_argument("--products", default=None, help="coinbase: product ids, e.g. BTC-USD,ETH-USD "
                    "(default $COINBASE_PRODUCTS)")
    pr.add_argument("--symbols", default=None, help="binance: symbols, e.g. btcusdt,ethusdt (default $BINANCE_SYMBOLS)")
    pr.add_argument("--duration", default=None, help="coinbase/binance: stop after this long, e.g. 30s, 2h")
    pr.add_argument("--seed", type=int, default=42)
    pr.add_argument("--bad-ratio", type=float, default=0.0, help="simulate: share of malformed messages")
    pr.add_argument("--history", default=None, help="simulate: emit a past window, e.g. 7d")
    pr.add_argument("--interval", default=None, help="simulate history: spacing between ticks, e.g. 60s")
    pr.add_argument("--mode", choices=["ticks", "trades", "both"], default="ticks",
                    help="simulate: ticks to crypto_raw, trades to crypto_trades, or both from one price path")
    pr.add_argument("--trade-rate", type=float, default=1.0, help="simulate trades: trades per second per product")
    pr.add_argument("--trade-imbalance", type=float, default=0.0,
                    help="simulate trades: expected (buys - sells) / trades, in (-1, 1)")
    pr.add_argument("--trade-bad-ratio", type=float, default=0.0, help="simulate trades: share of malformed trades")
    pr.add_argument("--trade-window", default=None, help="simulate history: trades only in the last part, e.g. 6h")
    pr.add_argument("--interval-s", dest="interval_s", type=float, default=None,
                    help="coingecko: poll interval; coinbase/binance: seconds between stats lines")
    pr.add_argument("--base-url", default=None, help="coingecko: API base URL")
    pr.add_argument("--file", default=None, help="replay: CSV or Parquet file")
    pr.add_argument("--speed", type=float, default=1.0, help="replay: time acceleration (0 = as fast as possible)")
    pr.add_argument("--shift-to-now", action="store_true", help="replay: move the series so it ends now")
    pr.set_defaults(func=cmd_produce)

    t = sub.add_parser("topics", help="create the declared topics on a real Kafka cluster")
    t.add_argument("--home")
    t.add_argument("--replication-factor", type=int, default=1)
    t.set_defaults(func=cmd_topics)

    qt = sub.add_parser("quarantine-ticks", help="move accepted ticks of a coin to quarantine and recompute from there")
    qt.add_argument("--home")
    qt.add_argument("--coin", required=True)
    qt.add_argument("--from", dest="start", required=True, help="event time of the first tick (ISO-8601, UTC if no zone)")
    qt.add_argument("--to", dest="end", default=None, help="event time of the last tick (default: --from)")
    qt.add_argument("--detail", default="quarantined by hand", help="why (stored in quarantine.detail)")
    qt.set_defaults(func=cmd_quarantine_ticks)

    al = sub.add_parser("alerts", help="deliver crypto_alerts to the webhooks in ALERT_WEBHOOKS / SLACK_WEBHOOK_URL")
    al.add_argument("--home")
    al.add_argument("--topic", default=None, help="topic to deliver (default crypto_alerts)")
    al.add_argument("--group", default="crypto_assets.alerts", help="Kafka consumer group")
    al.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    al.add_argument("--dead-letters", action="store_true", help="print ledger counts and dead letters, then exit")
    al.add_argument("--healthcheck", type=float, default=None, metavar="MAX_AGE_S",
                    help="exit 0 when the running consumer's heartbeat is at most this old")
    al.set_defaults(func=cmd_alerts)

    from crypto_assets.ops import demo, live, status

    d = sub.add_parser("demo", help="run the whole pipeline end to end on the embedded defaults")
    demo.add_arguments(d)
    d.set_defaults(func=demo.cmd_demo)

    lv = sub.add_parser("live", help="embedded broker + simulator + dagster dev with sensors on (Ctrl-C stops all)")
    live.add_arguments(lv)
    lv.set_defaults(func=live.cmd_live)

    s = sub.add_parser("status", help="health of broker, lag and tables (non-zero exit when unhealthy)")
    s.add_argument("--home")
    s.set_defaults(func=status.cmd_status)

    from crypto_assets.api import server

    sv = sub.add_parser("serve", help="the read API (FastAPI) over the gold Parquet mirror, on 127.0.0.1:8000")
    server.add_arguments(sv)
    sv.set_defaults(func=server.cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
