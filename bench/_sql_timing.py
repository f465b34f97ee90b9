"""Where a bench's DuckDB time goes: a connection proxy handed to the package's public functions
(they take any connection) that times every statement, and the package frames on the stack
(which crypto_assets function issued it)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import duckdb

FETCHES = ("fetchall", "fetchone", "pl", "arrow", "df", "fetchnumpy")
Record = Callable[[Hashable, str, float], None]  # (key, kind, seconds)


def package_frames(skip: int = 1) -> Iterator[tuple[str, str, int]]:
    """(module stem, function, line) of the crypto_assets frames on the stack, innermost first."""
    import crypto_assets

    pkg = os.path.dirname(crypto_assets.__file__) + os.sep
    f = sys._getframe(skip + 1)
    while f is not None:
        fn = f.f_code.co_filename
        if fn.startswith(pkg):
            yield os.path.splitext(os.path.basename(fn))[0], f.f_code.co_name, f.f_lineno
        f = f.f_back


class TimedConnection:
    """Delegates to a DuckDB connection and reports each statement's wall time to
    record(key, kind, seconds): kind 'execute', 'plan' (a sql() call, which plans only), 'fetch'
    (one of `fetches` on the relation sql() returned, under the same key) or 'register' (key
    None). key = key_of(sql), computed once per statement while the caller is on the stack."""

    def __init__(self, conn, key_of: Callable[[str], Hashable], record: Record, fetches: tuple[str, ...] = FETCHES) -> None:
        self._conn, self._key_of, self._record, self._fetches = conn, key_of, record, fetches

    def execute(self, sql, *a, **kw):
        key = self._key_of(sql)
        t = time.perf_counter()
        try:
            return self._conn.execute(sql, *a, **kw)
        finally:
            self._record(key, "execute", time.perf_counter() - t)

    def sql(self, sql, *a, **kw):
        key = self._key_of(sql)
        t = time.perf_counter()
        try:
            rel = self._conn.sql(sql, *a, **kw)
        finally:
            self._record(key, "plan", time.perf_counter() - t)
        return _TimedRelation(rel, key, self._record, self._fetches)

    def register(self, *a, **kw):
        t = time.perf_counter()
        try:
            return self._conn.register(*a, **kw)
        finally:
            self._record(None, "register", time.perf_counter() - t)

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def as_connection(self) -> duckdb.DuckDBPyConnection:
        """This proxy, typed as the connection it stands for (what it does not time, it delegates)."""
        return cast("duckdb.DuckDBPyConnection", self)


class _TimedRelation:
    def __init__(self, rel, key: Hashable, record: Record, fetches: tuple[str, ...]) -> None:
        self._rel, self._key, self._record, self._fetches = rel, key, record, fetches

    def __getattr__(self, name):
        attr = getattr(self._rel, name)
        if name not in self._fetches:
            return attr

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self._record(self._key, "fetch", time.perf_counter() - t)

        return timed
