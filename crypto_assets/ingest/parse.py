"""Bulk parsing of raw Kafka message values into typed contract columns.

Fast path: all values of a chunk are joined as NDJSON and parsed by polars' native reader with
the contract schema (~1M msgs/s). polars rejects the whole chunk if one message is bad, so
on failure the chunk takes the slow path: orjson triages each message with a precise reason and
the survivors are parsed in bulk again. Bad messages are rare in production; the slow path
only costs what a bad chunk costs.

Rules that need no parsing context (required fields, price > 0, timestamps, duplicates, known
coins) are applied afterwards in SQL, vectorised, by the pull (see validate.py). Reasons are
named by crypto_assets.rejections.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import orjson
import polars as pl

from crypto_assets import rejections as R
from crypto_assets.kafka.tick_contract import FIELDS, MAX_MESSAGE_BYTES

_POLARS_TYPES = {"int": pl.Int64, "float": pl.Float64, "str": pl.String}
CONTRACT_SCHEMA = pl.Schema({name: _POLARS_TYPES[kind] for name, kind in FIELDS.items()})

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class ParseResult:
    """`parsed`: contract columns + `idx` (position in the input list); `rejects`: idx/reason/detail."""

    parsed: pl.DataFrame
    rejects: pl.DataFrame


def _ndjson(values: list[bytes]) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(b"\n".join(values)), schema=CONTRACT_SCHEMA)


def _type_ok(kind: str, value: object) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int":
        return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX
    return True


def triage(value: bytes) -> tuple[str, str] | None:
    """Why one message is unusable (reason, detail), or None if it is a well-typed JSON object."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return R.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # Python's json emits NaN/Infinity, which is not JSON; name the field so it is clear.
        try:
            loose = json.loads(value)
        except (ValueError, RecursionError):
            return R.INVALID_JSON, str(exc)[:200]
        if isinstance(loose, dict):
            bad = [k for k, v in loose.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                reason = R.INVALID_PRICE if "price_usd" in bad else R.NON_FINITE_NUMBER
                return reason, f"non-finite number(s) (NaN/Infinity are not JSON) in: {', '.join(sorted(bad))}"
        return R.INVALID_JSON, str(exc)[:200]
    if not isinstance(obj, dict):
        return R.NOT_OBJECT, f"JSON {type(obj).__name__} where an object was expected"
    for name, kind in FIELDS.items():
        v = obj.get(name)
        if v is not None and not _type_ok(kind, v):
            return R.WRONG_TYPE, f"{name}: expected {kind}, got {type(v).__name__} {str(v)[:40]!r}"
    return None


def _parse_chunk(values: list[bytes], idx: list[int]) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Parse one chunk; returns (parsed frame with idx, rejects)."""
    try:
        df = _ndjson(values)
        if df.height == len(values):
            return df.with_columns(pl.Series("idx", idx, dtype=pl.UInt32)), []
    except Exception:  # noqa: BLE001 - any polars parse error sends the chunk to triage
        pass
    rejects: list[tuple[int, str, str]] = []
    good_vals: list[bytes] = []
    good_idx: list[int] = []
    for i, v in zip(idx, values, strict=True):
        verdict = triage(v)
        if verdict is None:
            good_vals.append(v)
            good_idx.append(i)
        else:
            rejects.append((i, *verdict))
    frames: list[pl.DataFrame] = []
    if good_vals:
        try:
            df = _ndjson(good_vals)
            if df.height != len(good_vals):
                raise ValueError("row count mismatch")
            frames.append(df.with_columns(pl.Series("idx", good_idx, dtype=pl.UInt32)))
        except Exception:  # noqa: BLE001 - triage and polars disagree: isolate per message
            for i, v in zip(good_idx, good_vals, strict=True):
                try:
                    one = _ndjson([v])
                    if one.height != 1:
                        raise ValueError("not exactly one JSON document")
                    frames.append(one.with_columns(pl.Series("idx", [i], dtype=pl.UInt32)))
                except Exception as exc:  # noqa: BLE001
                    rejects.append((i, R.UNPARSEABLE, str(exc)[:200]))
    parsed = pl.concat(frames) if frames else _empty_parsed()
    return parsed, rejects


def _empty_parsed() -> pl.DataFrame:
    return pl.DataFrame(schema={**CONTRACT_SCHEMA, "idx": pl.UInt32})


def _rejects_frame(rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"idx": pl.UInt32, "reason": pl.String, "detail": pl.String}, orient="row"
    )


def parse_values(
    values: list[bytes], max_bytes: int = MAX_MESSAGE_BYTES, chunk_size: int = 20_000
) -> ParseResult:
    """Parse message values in bulk. Every input index ends up in exactly one of the outputs."""
    if not values:
        return ParseResult(_empty_parsed(), _rejects_frame([]))
    # Fast path for a clean batch (the normal case): whole-batch checks that cost a few ms
    # (no value empty or oversized, no raw newline inside a value) and ONE NDJSON read.
    # Anything unusual falls through to the per-message checks and per-chunk parsing below.
    sizes_ = list(map(len, values))
    if min(sizes_) > 0 and max(sizes_) <= max_bytes:
        blob = b"\n".join(values)
        if blob.count(b"\n") == len(values) - 1:
            try:
                df = pl.read_ndjson(io.BytesIO(blob), schema=CONTRACT_SCHEMA)
                if df.height == len(values):
                    idx = pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx")
                    return ParseResult(df.with_columns(idx), _rejects_frame([]))
            except Exception:  # noqa: BLE001 - a bad message somewhere: take the careful path
                pass
        del blob
    series = pl.Series("v", values, dtype=pl.Binary)
    sizes = series.bin.size()
    oversized = (sizes > max_bytes).to_list()
    empty = (sizes == 0).to_list()
    # A value with a raw newline would break NDJSON framing: valid (pretty-printed) JSON still
    # parses, through the slow path.
    has_newline = series.bin.contains(b"\n").to_list()

    rejects: list[tuple[int, str, str]] = []
    fast_idx: list[int] = []
    slow_idx: list[int] = []
    if not any(oversized) and not any(empty) and not any(has_newline):
        fast_idx = list(range(len(values)))
    else:
        for i, (big, emp, nl) in enumerate(zip(oversized, empty, has_newline, strict=True)):
            if big:
                rejects.append((i, R.OVERSIZED, f"{len(values[i])} bytes > limit {max_bytes}"))
            elif emp:
                rejects.append((i, R.EMPTY_MESSAGE, "message value is empty or null"))
            elif nl:
                slow_idx.append(i)
            else:
                fast_idx.append(i)

    frames: list[pl.DataFrame] = []
    for start in range(0, len(fast_idx), chunk_size):
        idx = fast_idx[start : start + chunk_size]
        chunk_vals = values[idx[0] : idx[-1] + 1] if idx[-1] - idx[0] + 1 == len(idx) else [values[i] for i in idx]
        df, rej = _parse_chunk(chunk_vals, idx)
        frames.append(df)
        rejects.extend(rej)
    for i in slow_idx:
        verdict = triage(values[i])
        if verdict is not None:
            rejects.append((i, *verdict))
            continue
        try:
            obj = orjson.loads(values[i])
            frames.append(_ndjson([orjson.dumps(obj)]).with_columns(pl.Series("idx", [i], dtype=pl.UInt32)))
        except Exception as exc:  # noqa: BLE001
            rejects.append((i, R.UNPARSEABLE, str(exc)[:200]))
    parsed = pl.concat(frames) if frames else _empty_parsed()
    return ParseResult(parsed, _rejects_frame(rejects))
