"""The delivery ledger: a small SQLite file (var/alerts/deliveries.sqlite, never the DuckDB
warehouse, whose single writer is the pipeline) keyed (webhook, delivery_id).

The guarantee is AT MOST ONCE per delivery id per webhook, across restarts and kill -9:
- before every POST the row is set to "sending" and committed; only then is the request made;
- after it: "delivered" (2xx), "retrying" (the receiver refused the connection or answered
  non-2xx, so it did not take the notice), or a final "dead"/"unknown" with a dead-letter row;
- the consumer commits the Kafka offset only after every webhook's row is final, so a kill at
  any point re-reads the message, and the ledger decides: final rows are skipped, "retrying"
  rows are resumed (nothing was delivered), and a "sending" row found when a consumer starts
  (`recover`) means a process died with a POST in flight. That request may or may not have
  reached the receiver: re-sending it could deliver twice, so the row becomes "unknown" and is
  dead-lettered, never re-sent. The one notice a kill can lose per webhook is that in-flight
  one, and it is listed in dead_letters (reason "unknown") for a person to check.
Why not at-least-once: a person paged twice for one anomaly learns to ignore the pager; a
missed one is recorded where `crypto-assets alerts --dead-letters` shows it.

Rows are kept `retention_days` (35 by default: longer than crypto_alerts keeps messages, 30
days, so a message that could still be re-read always finds its row) and then pruned.
One consumer process per ledger file (the alerts topic has one partition); the run-failure
sensor shares the file with its own ids ("run:<id>") and never calls `recover`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FINAL = ("delivered", "dead", "unknown")

DDL = """
CREATE TABLE IF NOT EXISTS deliveries (
    webhook     TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('sending', 'retrying', 'delivered', 'dead', 'unknown')),
    attempts    INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT,
    first_at    REAL NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (webhook, delivery_id)
);
CREATE INDEX IF NOT EXISTS deliveries_updated ON deliveries (updated_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    webhook     TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,  -- exhausted | rejected | unknown | poison
    attempts    INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT,
    payload     BLOB,
    failed_at   REAL NOT NULL,
    PRIMARY KEY (webhook, delivery_id)
);
"""


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit; every change is its own short BEGIN IMMEDIATE transaction
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # the row must be on disk before the POST
        self._db.executescript(DDL)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def state(self, webhook: str, delivery_id: str) -> str | None:
        row = self._db.execute("SELECT state FROM deliveries WHERE webhook = ? AND delivery_id = ?",
                               (webhook, delivery_id)).fetchone()
        return row[0] if row else None

    def claim(self, webhook: str, delivery_id: str, kind: str) -> int | None:
        """Mark the next attempt "sending" (committed) and return its number, or None when this
        delivery must not be attempted (final, or another attempt is in flight)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state, attempts FROM deliveries WHERE webhook = ? AND delivery_id = ?",
                             (webhook, delivery_id)).fetchone()
            if row is None:
                db.execute("INSERT INTO deliveries VALUES (?, ?, ?, 'sending', 1, NULL, NULL, ?, ?)",
                           (webhook, delivery_id, kind, now, now))
                return 1
            if row[0] != "retrying":
                return None
            db.execute("UPDATE deliveries SET state = 'sending', attempts = ?, updated_at = ? "
                       "WHERE webhook = ? AND delivery_id = ?", (row[1] + 1, now, webhook, delivery_id))
            return row[1] + 1

    def delivered(self, webhook: str, delivery_id: str, status: int | None) -> None:
        self._set(webhook, delivery_id, "delivered", status, None)

    def will_retry(self, webhook: str, delivery_id: str, status: int | None, error: str | None) -> None:
        self._set(webhook, delivery_id, "retrying", status, error)

    def give_up(self, webhook: str, delivery_id: str, state: str, reason: str, status: int | None,
                error: str | None, payload: bytes | None) -> None:
        """Final failure: the row's state ("dead" or "unknown") and its dead-letter row, together."""
        with self._tx() as db:
            self._update(db, webhook, delivery_id, state, status, error)
            db.execute(
                "INSERT OR REPLACE INTO dead_letters SELECT webhook, delivery_id, kind, ?, attempts, last_status, "
                "last_error, ?, ? FROM deliveries WHERE webhook = ? AND delivery_id = ?",
                (reason, payload, time.time(), webhook, delivery_id),
            )

    def poison(self, source: str, detail: str, payload: bytes | None) -> None:
        """A message that is not an alert at all (no JSON, no anomaly_id): dead-lettered once."""
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO dead_letters VALUES ('*', ?, 'poison', 'poison', 0, NULL, ?, ?, ?)",
                       (source, detail, payload, now))

    def recover(self, kind: str = "anomaly") -> list[tuple[str, str]]:
        """At consumer start: every "sending" row of `kind` is a POST that a dead process had in
        flight; they become "unknown" (dead-lettered, never re-sent). Returns their keys."""
        with self._tx() as db:
            keys = db.execute("SELECT webhook, delivery_id FROM deliveries WHERE state = 'sending' AND kind = ?",
                              (kind,)).fetchall()
            for w, d in keys:
                self._update(db, w, d, "unknown", None, "process died with this POST in flight")
                db.execute(
                    "INSERT OR REPLACE INTO dead_letters SELECT webhook, delivery_id, kind, 'unknown', attempts, "
                    "last_status, last_error, NULL, ? FROM deliveries WHERE webhook = ? AND delivery_id = ?",
                    (time.time(), w, d),
                )
        return [(str(w), str(d)) for w, d in keys]

    def prune(self, retention_days: float, now: float | None = None) -> int:
        """Drop final rows and dead letters older than `retention_days`; returns rows removed."""
        cutoff = (time.time() if now is None else now) - retention_days * 86400
        with self._tx() as db:
            n = db.execute(f"DELETE FROM deliveries WHERE updated_at < ? AND state IN {FINAL}", (cutoff,)).rowcount
            n += db.execute("DELETE FROM dead_letters WHERE failed_at < ?", (cutoff,)).rowcount
        return n

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())

    def dead_letters(self) -> list[dict]:
        cur = self._db.execute("SELECT webhook, delivery_id, kind, reason, attempts, last_status, last_error, "
                               "failed_at FROM dead_letters ORDER BY failed_at")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def _set(self, webhook: str, delivery_id: str, state: str, status: int | None, error: str | None) -> None:
        with self._tx() as db:
            self._update(db, webhook, delivery_id, state, status, error)

    @staticmethod
    def _update(db: sqlite3.Connection, webhook: str, delivery_id: str, state: str, status: int | None,
                error: str | None) -> None:
        db.execute("UPDATE deliveries SET state = ?, last_status = coalesce(?, last_status), last_error = ?, "
                   "updated_at = ? WHERE webhook = ? AND delivery_id = ?",
                   (state, status, error, time.time(), webhook, delivery_id))
