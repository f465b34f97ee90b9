"""The end of bench/ingest.py: the correctness check of a warehouse after the rounds, and the
printed report (rates, ratios against the targets, memory, where (b)'s time goes, cProfile)."""

from __future__ import annotations

import cProfile
import io
import pstats
import resource
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

import duckdb

from bench._common import MB, verdict
from bench._ingest_phases import ConsumeOnly, PullAcc, RssSampler
from bench._ingest_timing import Timers, breakdown
from crypto_assets.ingest.config import BRONZE_DATASET, PullConfig
from crypto_assets.ingest.results import PullResult

TARGET_B_RATE = 100_000  # msgs/s
TARGET_B_OVER_A = 0.60
TARGET_B_OVER_C = 20.0


@dataclass
class IngestRun:
    """What the rounds measured, for the report."""

    N: int
    C: int
    import_s: float
    rounds: int = 0
    partitions: list[int] = field(default_factory=list)
    per_partition: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    value_bytes: int = 0
    gen_s: float = 0.0
    prod_s: float = 0.0
    acc_a: ConsumeOnly = field(default_factory=ConsumeOnly)
    acc_b: PullAcc = field(default_factory=lambda: PullAcc("b"))
    acc_b2: PullAcc = field(default_factory=lambda: PullAcc("b'"))
    timers_b: Timers = field(default_factory=Timers)
    timers_b2: Timers = field(default_factory=Timers)
    sampler: RssSampler | None = None
    prof: cProfile.Profile | None = None
    cfg_b: PullConfig | None = None
    hwm_ok: bool = True
    naive: tuple[int, float] = (0, float("nan"))
    res_x: PullResult | None = None
    export_once_s: float = 0.0
    export_once_inner: float = 0.0
    chk_a: dict = field(default_factory=dict)
    chk_b: dict | None = None
    problems: list[str] = field(default_factory=list)
    mem_probes: list[dict] = field(default_factory=list)
    load_end: float = 0.0


def check_warehouse(lake, label: str, N: int, problems: list[str]) -> dict:
    """Counts, distinct offsets and keys, quarantine and Parquet rows of one warehouse; what is
    wrong goes to problems."""
    with duckdb.connect(str(lake.duckdb_path), read_only=True) as conn:
        cnt, dist, dist_key = conn.sql(
            "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)), "
            "count(DISTINCT (coin_id, last_updated_at)) FROM raw_ticks"
        ).fetchall()[0]
        q = conn.sql("SELECT count(*) FROM quarantine").fetchall()[0][0]
        files = sorted(str(p) for p in (lake.lake_path / BRONZE_DATASET).rglob("*.parquet"))
        pq = conn.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0] if files else 0
        nxt = conn.sql(
            "SELECT kafka_partition, max(next_offset) FROM ingest_offsets GROUP BY 1 ORDER BY 1"
        ).fetchall()
    if cnt != N:
        problems.append(f"{label}: raw_ticks count {cnt:,} != N {N:,}")
    if dist != N:
        problems.append(f"{label}: distinct (kafka_partition, kafka_offset) {dist:,} != N {N:,}")
    if dist_key != N:
        problems.append(f"{label}: distinct (coin_id, last_updated_at) {dist_key:,} != N {N:,}")
    if q:
        problems.append(f"{label}: {q} quarantined rows (expected 0)")
    if pq != N:
        problems.append(f"{label}: Parquet mirror holds {pq:,} rows != N {N:,}")
    return {"count": cnt, "distinct_offsets": dist, "distinct_keys": dist_key, "quarantine": q,
            "parquet_rows": pq, "parquet_files": len(files), "offsets": nxt}


def fmt_rate(r: float) -> str:
    return f"{r:,.0f} msg/s"


def report(args, r: IngestRun) -> int:
    """Print the results; the exit code (1: a correctness problem, or a missed target with --strict)."""
    N, C, rnd, partitions, per_partition = r.N, r.C, r.rounds, r.partitions, r.per_partition
    acc_a, acc_b, acc_b2, timers_b, timers_b2 = r.acc_a, r.acc_b, r.acc_b2, r.timers_b, r.timers_b2
    naive, res_x, sampler, prof, cfg_b, problems = r.naive, r.res_x, r.sampler, r.prof, r.cfg_b, r.problems
    load_end, import_s, value_bytes, gen_s, prod_s = r.load_end, r.import_s, r.value_bytes, r.gen_s, r.prod_s
    export_once_s, export_once_inner, mem_probes, hwm_ok = r.export_once_s, r.export_once_inner, r.mem_probes, r.hwm_ok
    chk_a, chk_b = r.chk_a, r.chk_b
    if sampler is None or cfg_b is None or res_x is None:
        raise ValueError("report: the run has no RSS sampler, pull config or one-shot export result: it did not run")
    rate_a = N / acc_a.loop_s
    rate_a_total = N / acc_a.total_s
    rate_b = N / acc_b.total_s
    n_naive, t_naive = naive
    rate_c = n_naive / t_naive
    ratio_ba = rate_b / rate_a
    ratio_bc = rate_b / rate_c
    rusage_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    print()
    print("-" * 96)
    print(f"load average (1 min) at end: {load_end:.2f} (this run itself contributes 1-2; more means contention)")
    print(f"one-off: importing pyarrow (done before timing; a fresh Dagster run pays it on its first pull): {import_s:.2f} s")
    print(f"input: {N:,} messages, {value_bytes / MB:,.1f} MB of JSON values (avg {value_bytes / N:.0f} B), "
          f"{rnd} rounds of <= {C:,}")
    print("       per partition (key = coin_id, 10 coins on 4 partitions): "
          + ", ".join(f"p{p}={per_partition[p]:,}" for p in partitions))
    print(f"       (not measured) tick generation {N / gen_s:,.0f} msg/s, produce (TickProducer, idempotent, lz4) "
          f"{N / prod_s:,.0f} msg/s")
    print()
    print(f"(a) consume-only ceiling        {fmt_rate(rate_a):>16}   {acc_a.loop_s:7.2f} s  "
          f"(assign + consume(10000) loop; {fmt_rate(rate_a_total)} incl. consumer create/close)")
    print(f"(b) pull_raw_ticks, export off  {fmt_rate(rate_b):>16}   {acc_b.total_s:7.2f} s  "
          f"({rnd} calls, broker -> DuckDB rows + offsets, 1 txn per call, + group commit)")
    print(f"    per call: first {acc_b.per_round[0] * 1000:.0f} ms, median "
          f"{sorted(acc_b.per_round)[len(acc_b.per_round) // 2] * 1000:.0f} ms, last {acc_b.per_round[-1] * 1000:.0f} ms")
    if not args.no_export_per_round:
        rate_b2 = N / acc_b2.total_s
        exp2 = timers_b2.t.get("pull:export", 0.0)
        print(f"(b') pull_raw_ticks, export on  {fmt_rate(rate_b2):>16}   {acc_b2.total_s:7.2f} s  "
              f"(production default: re-export touched Parquet partitions every call;")
        print(f"     of which export_dirty {exp2:.2f} s = {exp2 / rnd * 1000:.0f} ms/call; first call "
              f"{acc_b2.per_round[0] * 1000:.0f} ms, last {acc_b2.per_round[-1] * 1000:.0f} ms)")
    print(f"     Parquet export cost, one-shot: exporting all {N:,} rows of (b)'s warehouse once took "
          f"{export_once_s:.2f} s (export_dirty {export_once_inner:.2f} s, "
          f"{res_x.export.partitions if res_x.export else 0} partitions) = {N / export_once_inner:,.0f} rows/s")
    print(f"    CPU time (all threads of this process, incl. the in-process broker and the sampler): "
          f"(a) {acc_a.cpu_s / N * 1e6:.2f} us/msg, (b) {acc_b.cpu_s / N * 1e6:.2f} us/msg "
          f"(wall: (a) {acc_a.loop_s / N * 1e6:.2f}, (b) {acc_b.total_s / N * 1e6:.2f} us/msg)")
    full = [i for i in range(rnd) if i < rnd - 1 or N % C == 0]  # rounds of exactly C messages
    if len(full) >= 3:
        med = statistics.median
        ma = med([acc_a.per_round[i] for i in full])
        mb = med([acc_b.per_round[i] for i in full])
        line = f"    median round (less sensitive to bursts of other load): (a) {C / ma:,.0f}, (b) {C / mb:,.0f}"
        if not args.no_export_per_round:
            line += f", (b') {C / med([acc_b2.per_round[i] for i in full]):,.0f}"
        print(line + f" msg/s; b/a {ma / mb:.2f}")
    print(f"(c) naive baseline              {fmt_rate(rate_c):>16}   {t_naive:7.2f} s for the first {n_naive:,} "
          f"messages of round 1 (json.loads + 1-row INSERT each, one txn)")
    print(f"    extrapolated to N={N:,}: {N / rate_c:,.0f} s ({N / rate_c / 60:.1f} min) -- EXTRAPOLATED, not run")
    print()
    print(f"b/a = {ratio_ba:.2f}   (b vs consume-only; {rate_b / rate_a_total:.2f} vs (a) incl. consumer create/close)")
    print(f"b/c = {ratio_bc:.1f}")
    print()
    print("memory:")
    if hwm_ok:
        print(f"  peak RSS during (b) (VmHWM reset before each call): {acc_b.peak_hwm_kb / 1024:,.0f} MB "
              f"(RSS before that call {acc_b.base_kb / 1024:,.0f} MB; largest rise during one call "
              f"{acc_b.peak_delta_kb / 1024:,.0f} MB)")
    if sampler.available:
        print(f"  peak RSS during (b), psutil 5 ms sampling: {sampler.peak / MB:,.0f} MB")
    print(f"  ru_maxrss of the whole process (all phases, incl. producing): {rusage_kb / 1024:,.0f} MB")
    print("  (in this long-lived process the allocator re-uses memory freed by earlier phases, so the rise\n"
          "   during a call understates the pull's working set; the fresh-process probes below measure it)")
    for mp in mem_probes:
        if "error" in mp:
            print(f"  fresh-process probe batch_size={mp['batch_size']:,}: failed: {mp['error']}")
            continue
        print(f"  fresh-process probe ({mp['name']}): pull_raw_ticks(max_messages={mp['max_messages']:,}, batch_size={mp['batch_size']:,}) "
              f"read {mp['messages']:,} msgs in {mp['batches']} txn(s): RSS {mp['rss0_kb'] / 1024:,.0f} MB before "
              f"(imports + DuckDB opened), peak {mp['hwm_kb'] / 1024:,.0f} MB => +{(mp['hwm_kb'] - mp['rss0_kb']) / 1024:,.0f} MB")
    ok_probes = {mp["name"]: mp for mp in mem_probes if "error" not in mp}
    if {"big", "small_one", "small_many"} <= set(ok_probes) and ok_probes["big"]["messages"] > ok_probes["small_one"]["messages"]:
        rise = {k: (v["hwm_kb"] - v["rss0_kb"]) / 1024 for k, v in ok_probes.items()}
        dn = ok_probes["big"]["messages"] - ok_probes["small_one"]["messages"]
        per_msg_b = (rise["big"] - rise["small_one"]) * MB / dn
        print(f"  => working set ~ {rise['small_one']:,.0f} MB + {per_msg_b:,.0f} B per message of the batch "
              f"({per_msg_b * args.batch_size / MB:,.0f} MB at batch_size={args.batch_size:,}); reading "
              f"{ok_probes['small_many']['messages']:,} messages as {ok_probes['small_many']['batches']} small "
              f"transactions peaks at +{rise['small_many']:,.0f} MB:")
        print("     batch_size bounds the per-transaction part; reading more messages in more transactions still\n"
              "     adds some (librdkafka's prefetch queue, up to queued.max.messages.kbytes=256 MB in\n"
              "     KafkaResource.consumer_config, plus allocator arenas), but far less than one big batch")
    print(f"  in (b) above each call reads one round, i.e. min(C, batch_size)={min(C, cfg_b.batch_size):,} messages")
    print()
    print(f"where (b)'s time goes ({acc_b.total_s:.2f} s over {rnd} calls; the pull's own phase timings and timed DuckDB statements):")
    for key, v in breakdown(timers_b, acc_b.total_s):
        if abs(v) < 0.0005 and not key.startswith("unaccounted"):
            continue
        print(f"  {key:<66} {v:7.3f} s {v / acc_b.total_s * 100:5.1f}%")
    print()
    print("targets:")
    ok1 = rate_b >= TARGET_B_RATE
    ok2 = ratio_ba >= TARGET_B_OVER_A
    ok3 = ratio_bc >= TARGET_B_OVER_C
    print(f"  (b) >= {TARGET_B_RATE:,} msg/s : {rate_b:>12,.0f}   {verdict(ok1)}")
    print(f"  b/a >= {TARGET_B_OVER_A:.2f}          : {ratio_ba:>12.2f}   {verdict(ok2)}")
    print(f"  b/c >= {TARGET_B_OVER_C:.0f}            : {ratio_bc:>12.1f}   {verdict(ok3)}")
    print()
    print("correctness:")
    for label, chk in (("(b) export off", chk_a), ("(b') export on", chk_b)):
        if chk is None:
            continue
        print(f"  {label}: raw_ticks={chk['count']:,}, distinct (partition, offset)={chk['distinct_offsets']:,}, "
              f"distinct (coin_id, last_updated_at)={chk['distinct_keys']:,}, quarantine={chk['quarantine']}, "
              f"parquet rows={chk['parquet_rows']:,} in {chk['parquet_files']} files")
    print(f"  stored next offsets (b): {dict(chk_a['offsets'])}")
    print(f"  correctness: {'PASS' if not problems else 'FAIL'}")
    for p in problems:
        print(f"    - {p}")

    if prof:
        print()
        print("cProfile of the (b) calls, top 25 by internal time:")
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue())
        if args.cprofile != "-":
            prof.dump_stats(args.cprofile)
            print(f"profile written to {args.cprofile} (python -m pstats {args.cprofile})")

    if problems:
        return 1
    if args.strict and not (ok1 and ok2 and ok3):
        return 1
    return 0
