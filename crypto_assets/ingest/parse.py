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


def polars_schema(fields: dict[str, str]) -> pl.Schema:
    """The polars schema of a contract's JSON fields ("int" | "float" | "str")."""
    return pl.Schema({name: _POLARS_TYPES[kind] for name, kind in fields.items()})


CONTRACT_SCHEMA = polars_schema(FIELDS)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class ParseResult:
    """`parsed`: contract columns + `idx` (position in the input list); `rejects`: idx/reason/detail."""

    parsed: pl.DataFrame
    rejects: pl.DataFrame


def _ndjson(values: list[bytes], schema: pl.Schema = CONTRACT_SCHEMA) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(b"\n".join(values)), schema=schema)


def _type_ok(kind: str, value: object) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int":
        return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX
    return True


def triage(value: bytes, fields: dict[str, str] = FIELDS) -> tuple[str, str] | None:
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
    for name, kind in fields.items():
        v = obj.get(name)
        if v is not None and not _type_ok(kind, v):
            return R.WRONG_TYPE, f"{name}: expected {kind}, got {type(v).__name__} {str(v)[:40]!r}"
    return None


def _parse_chunk(values: list[bytes], idx: list[int],
                 fields: dict[str, str] = FIELDS) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    """Parse one chunk; returns (parsed frame with idx, rejects)."""
    schema = polars_schema(fields)
    try:
        df = _ndjson(values, schema)
        if df.height == len(values):
            return df.with_columns(pl.Series("idx", idx, dtype=pl.UInt32)), []
    except Exception:  # noqa: BLE001 - any polars parse error sends the chunk to triage
        pass
    rejects: list[tuple[int, str, str]] = []
    good_vals: list[bytes] = []
    good_idx: list[int] = []
    for i, v in zip(idx, values, strict=True):
        verdict = triage(v, fields)
        if verdict is None:
            good_vals.append(v)
            good_idx.append(i)
        else:
            rejects.append((i, *verdict))
    frames: list[pl.DataFrame] = []
    if good_vals:
        try:
            df = _ndjson(good_vals, schema)
            if df.height != len(good_vals):
                raise ValueError("row count mismatch")
            frames.append(df.with_columns(pl.Series("idx", good_idx, dtype=pl.UInt32)))
        except Exception:  # noqa: BLE001 - triage and polars disagree: isolate per message
            for i, v in zip(good_idx, good_vals, strict=True):
                try:
                    one = _ndjson([v], schema)
                    if one.height != 1:
                        raise ValueError("not exactly one JSON document")
                    frames.append(one.with_columns(pl.Series("idx", [i], dtype=pl.UInt32)))
                except Exception as exc:  # noqa: BLE001
                    rejects.append((i, R.UNPARSEABLE, str(exc)[:200]))
    parsed = pl.concat(frames) if frames else _empty_parsed(schema)
    return parsed, rejects


def _empty_parsed(schema: pl.Schema = CONTRACT_SCHEMA) -> pl.DataFrame:
    return pl.DataFrame(schema={**schema, "idx": pl.UInt32})


def _rejects_frame(rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"idx": pl.UInt32, "reason": pl.String, "detail": pl.String}, orient="row"
    )


def parse_values(
    values: list[bytes], max_bytes: int = MAX_MESSAGE_BYTES, chunk_size: int = 20_000,
    fields: dict[str, str] = FIELDS, strict_strings: tuple[str, ...] = (),
) -> ParseResult:
    """Parse message values in bulk with the contract `fields` (default: the tick contract's).
    Every input index ends up in exactly one of the outputs. `strict_strings`: fields that must
    be JSON strings (see verify_strings)."""
    schema = polars_schema(fields)
    if not values:
        return ParseResult(_empty_parsed(schema), _rejects_frame([]))
    # Fast path for a clean batch (the normal case): whole-batch checks that cost a few ms
    # (no value empty or oversized, no raw newline inside a value) and ONE NDJSON read.
    # Anything unusual falls through to the per-message checks and per-chunk parsing below.
    sizes_ = list(map(len, values))
    if min(sizes_) > 0 and max(sizes_) <= max_bytes:
        blob = b"\n".join(values)
        if blob.count(b"\n") == len(values) - 1:
            try:
                df = pl.read_ndjson(io.BytesIO(blob), schema=schema)
                if df.height == len(values):
                    idx = pl.int_range(pl.len(), dtype=pl.UInt32).alias("idx")
                    return verify_strings(values, ParseResult(df.with_columns(idx), _rejects_frame([])),
                                          fields, strict_strings)
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
        df, rej = _parse_chunk(chunk_vals, idx, fields)
        frames.append(df)
        rejects.extend(rej)
    for i in slow_idx:
        verdict = triage(values[i], fields)
        if verdict is not None:
            rejects.append((i, *verdict))
            continue
        try:
            obj = orjson.loads(values[i])
            frames.append(_ndjson([orjson.dumps(obj)], schema).with_columns(pl.Series("idx", [i], dtype=pl.UInt32)))
        except Exception as exc:  # noqa: BLE001
            rejects.append((i, R.UNPARSEABLE, str(exc)[:200]))
    parsed = pl.concat(frames) if frames else _empty_parsed(schema)
    return verify_strings(values, ParseResult(parsed, _rejects_frame(rejects)), fields, strict_strings)


def verify_strings(values: list[bytes], result: ParseResult, fields: dict[str, str],
                   strict_strings: tuple[str, ...]) -> ParseResult:
    """polars reads a JSON number into a String column without a word (`1.5` -> "1.5"), so a
    float price would pass as exact. For each strict field, a parsed row whose raw message does
    not spell the field as `"name": "` is triaged with orjson (wrong_type); one regex pass over
    the batch, vectorised, and triage only for the rows it flags."""
    parsed = result.parsed
    if not strict_strings or not parsed.height:
        return result
    idx = parsed["idx"]
    raw = pl.Series("raw", values if parsed.height == len(values) and idx.is_sorted() else [values[i] for i in idx],
                    dtype=pl.Binary).cast(pl.String, strict=False)
    suspect = pl.lit(False)
    for name in strict_strings:
        spelled = pl.col("raw").str.contains(f'"{name}"\\s*:\\s*"').fill_null(False)
        suspect = suspect | (pl.col(name).is_not_null() & ~spelled)
    flagged = parsed.select("idx", *strict_strings).with_columns(raw).filter(suspect)["idx"].to_list()
    if not flagged:
        return result
    rows = [(i, *v) for i in flagged if (v := triage(values[i], fields)) is not None]
    if not rows:
        return result
    bad = [r[0] for r in rows]
    return ParseResult(parsed.filter(~pl.col("idx").is_in(bad)), pl.concat([result.rejects, _rejects_frame(rows)]))
