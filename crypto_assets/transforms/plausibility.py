"""The jump guard of clean_ticks: a price many times away from the coin's recent prices is
quarantined as `price_jump`, without ever getting stuck on a bad reference.

The reference is the coin's last `jump_window` *candidate* ticks in arrival order (batch,
partition, offset): ticks that passed every other rule, whether the guard accepted them or not.
A tick is accepted when, counting itself, at least half of it and those predecessors that are
fresh (event time within `jump_max_age` of its own) lie within `max_jump_ratio` of its price:
rejected iff disagreeing > agreeing + 1. Because rejected ticks still vote, the reference
cannot stick: a new level is accepted from its `ceil((jump_window + 1) / 2)`-th consecutive
tick on (the 3rd with the default 5; the ones before stay in quarantine), and after a silence
longer than `jump_max_age` (nothing fresh to compare with) the first tick back is accepted.
A lone bad tick among real ones is rejected as soon as the coin has two fresh predecessors,
and a real tick after a lone bad one (even a bad first tick, which nothing can refute) is
accepted: it disagrees with one predecessor only.

No verdict feeds back into the reference, so the whole batch is judged with one window
function; the last `jump_window` candidates per coin are kept in `clean_price_window`, moved
in the same transaction as the rows, so any split of the same arrival sequence into runs
judges every tick the same way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from crypto_assets.transforms.clean import CleanConfig

_ARRIVAL = "batch_id, kafka_partition, kafka_offset"


def judge_jumps(conn: duckdb.DuckDBPyConnection, cfg: CleanConfig) -> None:
    """Mark the jumps among the candidates (verdict IS NULL) of the temp table `clean_judged`
    and move the coins' windows on. Runs inside the caller's transaction."""
    n = int(cfg.jump_window)
    if n <= 0:
        return
    # The k-th predecessor of each candidate as lag(k) columns (one sort for all of them): fresh
    # when its event time is within the age, agreeing when its log price is within the ratio.
    lags = ", ".join(
        f"lag(lp, {k}) OVER w AS lp_{k}, lag(event_time, {k}) OVER w AS t_{k}" for k in range(1, n + 1)
    )
    fresh = [f"(t_{k} BETWEEN event_time - $age AND event_time + $age)" for k in range(1, n + 1)]
    n_fresh = " + ".join(f"coalesce({f}, FALSE)::INT" for f in fresh)
    n_agree = " + ".join(f"coalesce({f} AND abs(lp_{k} - lp) <= $ln_ratio, FALSE)::INT" for k, f in enumerate(fresh, 1))
    fresh_lps = ", ".join(f"CASE WHEN {f} THEN lp_{k} END" for k, f in enumerate(fresh, 1))
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE clean_cand AS
        SELECT coin_id, {_ARRIVAL}, last_updated_at AS event_time, price_usd, TRUE AS is_new
        FROM clean_judged WHERE verdict IS NULL
        UNION ALL
        SELECT w.coin_id, w.batch_id, w.kafka_partition, w.kafka_offset, w.event_time, w.price_usd, FALSE
        FROM clean_price_window w
        WHERE w.coin_id IN (SELECT DISTINCT coin_id FROM clean_judged WHERE verdict IS NULL)
        """
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE clean_jumps AS
        WITH l AS (
            SELECT *, {lags} FROM (SELECT *, ln(price_usd) AS lp FROM clean_cand)
            WINDOW w AS (PARTITION BY coin_id ORDER BY {_ARRIVAL})
        ), v AS (
            SELECT *, {n_fresh} AS n_fresh, {n_agree} AS n_agree FROM l WHERE is_new
        )
        SELECT coin_id, batch_id, kafka_partition, kafka_offset,
               printf('price_usd %.6g is more than %gx away from %d of the coin''s %d recent prices (median %.6g) '
                      || 'and within %gx of %d; a tick is accepted when at least half of them, itself counted, agree',
                      price_usd, $ratio, n_fresh - n_agree, n_fresh,
                      exp(list_median(list_filter([{fresh_lps}], lambda x: x IS NOT NULL))), $ratio, n_agree) AS detail
        FROM v WHERE n_fresh - n_agree > n_agree + 1
        """,
        {"age": cfg.jump_max_age, "ln_ratio": math.log(cfg.max_jump_ratio), "ratio": cfg.max_jump_ratio},
    )
    conn.execute(
        """
        UPDATE clean_judged SET verdict = 'price_jump', detail = j.detail
        FROM clean_jumps j
        WHERE clean_judged.verdict IS NULL AND clean_judged.coin_id = j.coin_id AND clean_judged.batch_id = j.batch_id
          AND clean_judged.kafka_partition = j.kafka_partition AND clean_judged.kafka_offset = j.kafka_offset
        """
    )
    conn.execute("DELETE FROM clean_price_window WHERE coin_id IN (SELECT DISTINCT coin_id FROM clean_cand)")
    conn.execute(
        f"""
        INSERT INTO clean_price_window
        SELECT coin_id, {_ARRIVAL}, event_time, price_usd FROM clean_cand
        QUALIFY row_number() OVER (PARTITION BY coin_id ORDER BY batch_id DESC, kafka_partition DESC,
                                   kafka_offset DESC) <= {n}
        """
    )
