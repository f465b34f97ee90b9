"""Ingest throughput benchmark: Kafka (embedded broker) -> DuckDB, the `raw_ticks` pull.

    .venv/bin/python bench/ingest.py [--messages N] [--chunk C] [--naive-messages K]
                                     [--batch-size B] [--no-export-per-round] [--cprofile [FILE]]
                                     [--strict]

A benchmark, not a test: it prints numbers and PASS/FAIL against targets; it exits non-zero
only when the correctness check fails (or with --strict, when a target is missed).

Everything happens in this process and under a temporary CRYPTO_HOME: an in-process embedded
broker (librdkafka's mock cluster, `crypto_assets.kafka.embedded_broker.EmbeddedBroker`), temporary DuckDB
files and Parquet trees, all deleted at the end.

ROUNDS. The embedded broker keeps only ~5 MB per partition (the limit counts the stored, i.e.
lz4-compressed, batches) and silently drops older messages, like retention. So the N messages
are not produced up front: they are produced and measured in rounds of C messages (default
150,000: the busiest of the 4 partitions gets 4 of the 10 coins, i.e. 60,000 messages a round,
and the log keeps ~73,000 of them). Each round
  1. produces C contract ticks (10 default coins, key = coin_id, event times increasing,
     (coin_id, last_updated_at) unique) through the project's idempotent TickProducer,
  2. checks that the whole round is still in the log (low watermark <= round start),
  3. measures, on that same round's messages:
     (a) consume-only: a confluent-kafka Consumer (the pull's consumer config) with assign()
         from the round's start offsets to the high watermarks, consume(10000) loops, touching
         every value (sum of len(value)) -- the ceiling;
     (b) the real pull: `pull_raw_ticks(kafka, lakehouse, PullConfig(batch_size=..,
         export_parquet=False))`, one call per round, reading from the offsets stored in DuckDB
         up to the watermarks -- pure ingest, broker -> DuckDB (rows + offsets in one
         transaction) + consumer-group commit;
     (b') the same pull into a second warehouse with export_parquet=True (the production
         default): ingest + re-export of the touched Parquet partitions every round;
     (c) round 1 only: a naive baseline on the first K (default 20,000) messages: per-message
         json.loads + one single-row parameterised INSERT per message into a DuckDB table with
         the raw_ticks columns, inside one transaction, offsets written and committed to Kafka
         at the end. Its rate is extrapolated to N (it is far too slow to run on all of N).
Times are summed over rounds; rates are N / summed time. Production and tick generation are
not measured (only reported). After the last round, the Parquet export of the export-off
warehouse is timed once on its own (one-shot export of all N rows), and correctness is checked:
raw_ticks count == N and distinct (kafka_partition, kafka_offset) == N in both warehouses,
nothing quarantined, and the Parquet mirrors hold N rows.

Peak RSS during (b): the kernel's VmHWM is reset (/proc/self/clear_refs) before each (b) call
and read after it; psutil (if installed) also samples RSS every 5 ms as a cross-check. Here one
call is one batch of min(C, batch_size) messages. Because this long-lived process reuses memory
freed by earlier phases, three fresh-process probes also run one pull each (batch_size B reading
B; B/10 reading B; B/10 reading B/10) to show the working set per message of a batch, i.e. what
batch_size bounds and what it does not.

CPU time (time.process_time, all threads of this process, which include the in-process broker)
is printed next to wall time: on a shared machine it is the less load-sensitive figure.

Where (b)'s time goes comes from the pull's own phase timings (PullResult.timings: consumer
set-up, Consumer.consume(), parse, write, group commit, DLQ, export) and from every DuckDB
statement, timed through a LakehouseResource subclass whose connections time their statements
(bench/_ingest_timing.py); exclusive time per step is printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import orjson  # noqa: E402
import polars as pl  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402

from bench._common import reset_hwm, status_kb  # noqa: E402
from bench._ingest_phases import RssSampler, TickStream, consume_only, memory_probe, naive_baseline, watermarks  # noqa: E402
from bench._ingest_report import IngestRun, check_warehouse, report  # noqa: E402
from bench._ingest_timing import BenchLakehouse, recording  # noqa: E402
from crypto_assets.ingest.pull import PullConfig, pull_raw_ticks  # noqa: E402
from crypto_assets.kafka.embedded_broker import EmbeddedBroker  # noqa: E402
from crypto_assets.kafka.producer import TickProducer  # noqa: E402
from crypto_assets.kafka.topics import DLQ_TOPIC, RAW_TOPIC  # noqa: E402
from crypto_assets.resources import KafkaResource  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000, help="N, total messages (default 1,000,000)")
    ap.add_argument("--chunk", type=int, default=150_000, help="C, messages per round (default 150,000)")
    ap.add_argument("--batch-size", type=int, default=PullConfig.batch_size,
                    help=f"PullConfig.batch_size (default {PullConfig.batch_size:,})")
    ap.add_argument("--naive-messages", type=int, default=20_000, help="subset for the naive baseline (default 20,000)")
    ap.add_argument("--no-export-per-round", action="store_true", help="skip (b'), the export-on pull")
    ap.add_argument("--cprofile", nargs="?", const="-", default=None, metavar="FILE",
                    help="also cProfile the (b) calls: print the top functions (and dump stats to FILE)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.messages <= 0 or args.chunk <= 0 or args.batch_size <= 0:
        ap.error("--messages, --chunk and --batch-size must be positive")
    tmp = tempfile.TemporaryDirectory(prefix="crypto_bench_")
    broker = EmbeddedBroker()
    try:
        return run(args, Path(tmp.name), broker)
    finally:
        gc.collect()  # destroy the clients (run()'s locals) before the cluster they talk to
        broker.stop()
        tmp.cleanup()


def run(args: argparse.Namespace, root: Path, broker: EmbeddedBroker) -> int:
    N, C = args.messages, args.chunk
    load_start = os.getloadavg()[0]
    naive_n = min(args.naive_messages, C, N)
    os.environ["CRYPTO_HOME"] = str(root / "var")  # belt and braces: nothing resolves ./var
    home_a, home_b = root / "var", root / "var_export"
    for h in (home_a, home_b):
        h.mkdir(parents=True)

    print("=" * 96)
    print(f"crypto_assets ingest benchmark: N={N:,} messages in rounds of C={C:,}")
    print(
        f"python {platform.python_version()}, duckdb {duckdb.__version__}, polars {pl.__version__}, "
        f"librdkafka {__import__('confluent_kafka').libversion()[0]}, orjson {orjson.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"temp CRYPTO_HOME: {root}")
    print(f"load average (1 min) at start: {load_start:.2f} on {os.cpu_count()} CPUs"
          + ("  <-- WARNING: other work is running; timings will be pessimistic" if load_start > 0.5 else ""))
    print(
        "NOTE: the embedded (librdkafka mock) broker keeps only ~5 MB per partition and drops older\n"
        "      messages, so messages are produced and measured in rounds of C: each round produces C\n"
        "      messages, then (a), (b), (b') run on exactly that round's messages; times are summed\n"
        "      over rounds. (c) runs once, on the first round, and is extrapolated."
    )
    print("=" * 96)

    bootstrap = broker.start(topics=[RAW_TOPIC, DLQ_TOPIC])
    # One-off library import cost kept out of the timings: the pull's first to_arrow() imports
    # pyarrow (and numpy), which takes ~0.4 s here (PYTHONDONTWRITEBYTECODE=1 => no .pyc cache).
    t = time.perf_counter()
    import pyarrow  # noqa: F401

    r = IngestRun(N=N, C=C, import_s=time.perf_counter() - t)
    kafka_a = KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(home_a),
                            consumer_group="bench.pull")
    kafka_b = KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(home_b),
                            consumer_group="bench.pull_export")
    lake_a = BenchLakehouse(home=str(home_a))
    lake_b = BenchLakehouse(home=str(home_b))
    topic = kafka_a.raw_topic
    cfg_b = r.cfg_b = PullConfig(batch_size=args.batch_size, export_parquet=False)
    cfg_b2 = PullConfig(batch_size=args.batch_size, export_parquet=True)
    print(f"broker {broker.bootstrap_servers}, topic {topic}; lakehouse duckdb threads={lake_a.duckdb_threads}, "
          f"memory_limit={lake_a.duckdb_memory_limit}; PullConfig(batch_size={cfg_b.batch_size:,}, "
          f"consume_chunk={cfg_b.consume_chunk:,})")

    # A plain consumer's metadata request does not auto-create a topic on the mock cluster
    # (allow.auto.create.topics defaults to false for consumers), so ask for creation here.
    probe = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "bench.probe",
                      "allow.auto.create.topics": True})
    partitions = r.partitions = sorted(probe.list_topics(topic=topic, timeout=10).topics[topic].partitions)
    if not partitions:
        print(f"ERROR: topic {topic} has no partitions on the embedded broker")
        return 2

    stream = TickStream(N)
    acc_a, acc_b, acc_b2, timers_b, timers_b2 = r.acc_a, r.acc_b, r.acc_b2, r.timers_b, r.timers_b2
    sampler = r.sampler = RssSampler()
    prof = r.prof = cProfile.Profile() if args.cprofile else None
    per_partition = r.per_partition = defaultdict(int)

    done = 0
    hdr_b2 = "(b') ms"
    print(f"{'round':>5} {'msgs':>7} {'(a) ms':>8} {'(b) ms':>8} {hdr_b2:>8} {'(b) peak RSS':>13}  log offsets")
    while done < N:
        r.rounds += 1
        rnd, n_r = r.rounds, min(C, N - done)
        start = {p: hi for p, (_lo, hi) in watermarks(probe, topic, partitions).items()}

        t = time.perf_counter()
        batch = stream.take(n_r)
        r.gen_s += time.perf_counter() - t
        r.value_bytes += sum(len(v) for _, v in batch)
        t = time.perf_counter()
        with TickProducer(kafka_a) as producer:
            for key, value in batch:
                producer.send_raw(key, value)
        r.prod_s += time.perf_counter() - t
        del batch

        wm = watermarks(probe, topic, partitions)
        high = {p: hi for p, (_lo, hi) in wm.items()}
        lost = {p: (start[p], lo) for p, (lo, _hi) in wm.items() if lo > start[p]}
        if lost:
            print(f"ERROR: retention dropped part of round {rnd} before it was read "
                  f"(partition: (round start, low watermark)) {lost}; use a smaller --chunk")
            return 2
        produced = sum(high[p] - start[p] for p in partitions)
        if produced != n_r:
            print(f"ERROR: round {rnd}: {produced} new offsets for {n_r} produced messages")
            return 2
        for p in partitions:
            per_partition[p] += high[p] - start[p]

        # (a) consume-only ceiling
        gc.collect()
        a_before = acc_a.loop_s
        consume_only(kafka_a, topic, start, high, acc_a)
        a_ms = (acc_a.loop_s - a_before) * 1000

        # (b) the real pull, Parquet export off
        gc.collect()
        base_kb = status_kb("VmRSS") or 0
        r.hwm_ok = reset_hwm() and r.hwm_ok
        with recording(timers_b), sampler.active():
            if prof:
                prof.enable()
            c0 = time.process_time()
            t = time.perf_counter()
            res = pull_raw_ticks(kafka_a, lake_a, cfg_b)
            dt = time.perf_counter() - t
            acc_b.cpu_s += time.process_time() - c0
            if prof:
                prof.disable()
        timers_b.add_pull(res.timings)
        hwm_kb = status_kb("VmHWM") or 0
        if res.messages != n_r or res.rows_written != n_r or res.quarantined:
            print(f"ERROR: round {rnd}: pull read {res.messages}, wrote {res.rows_written}, "
                  f"quarantined {res.quarantined} (expected {n_r}); notices: {res.notices}")
            return 2
        acc_b.total_s += dt
        acc_b.messages += res.messages
        acc_b.per_round.append(dt)
        if hwm_kb > acc_b.peak_hwm_kb:
            acc_b.peak_hwm_kb, acc_b.base_kb = hwm_kb, base_kb
        acc_b.peak_delta_kb = max(acc_b.peak_delta_kb, hwm_kb - base_kb)

        # (b') the real pull with Parquet export every round (production default)
        dt2 = float("nan")
        if not args.no_export_per_round:
            gc.collect()
            with recording(timers_b2):
                t = time.perf_counter()
                res2 = pull_raw_ticks(kafka_b, lake_b, cfg_b2)
                dt2 = time.perf_counter() - t
            timers_b2.add_pull(res2.timings)
            if res2.messages != n_r or res2.rows_written != n_r:
                print(f"ERROR: round {rnd} (export on): pull read {res2.messages}, wrote {res2.rows_written}")
                return 2
            acc_b2.total_s += dt2
            acc_b2.messages += res2.messages
            acc_b2.per_round.append(dt2)

        # (c) naive baseline, first round only
        if rnd == 1:
            gc.collect()
            r.naive = naive_baseline(kafka_a, root, topic, start, naive_n)

        done += n_r
        print(f"{rnd:>5} {n_r:>7,} {a_ms:>8.0f} {dt * 1000:>8.0f} {dt2 * 1000:>8.0f} "
              f"{hwm_kb / 1024:>10.0f} MB  " + " ".join(f"p{p}:{wm[p][0]}..{wm[p][1]}" for p in partitions))

    # One-shot Parquet export of everything the export-off warehouse ingested.
    gc.collect()
    t = time.perf_counter()
    r.res_x = pull_raw_ticks(kafka_a, lake_a, PullConfig(batch_size=args.batch_size, export_parquet=True))
    r.export_once_s = time.perf_counter() - t
    r.export_once_inner = r.res_x.timings.get("export", 0.0)

    r.chk_a = check_warehouse(lake_a, "warehouse (b)", N, r.problems)
    r.chk_b = check_warehouse(lake_b, "warehouse (b')", N, r.problems) if not args.no_export_per_round else None
    r.load_end = os.getloadavg()[0]
    small = max(args.batch_size // 10, 1)
    r.mem_probes = [
        memory_probe(bootstrap, root, "big", args.batch_size, min(N, args.batch_size)),
        memory_probe(bootstrap, root, "small_many", small, min(N, args.batch_size)),
        memory_probe(bootstrap, root, "small_one", small, min(N, small)),
    ]
    probe.close()
    del producer
    return report(args, r)


if __name__ == "__main__":
    sys.exit(main())
