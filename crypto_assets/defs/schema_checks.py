"""Schema drift: each warehouse table against the columns the code declares (one step, run with
training and full runs: schemas change with code, not with data)."""

import dagster as dg

from crypto_assets.defs.check_verdicts import WARN, Verdict
from crypto_assets.resources import LakehouseResource
from crypto_assets.warehouse.tables import TABLES


def schema_matches(conn, table: str) -> Verdict:
    """The table's columns (DESCRIBE) are the ones the code declares: the declared schema is
    the assets' definition metadata, so no run has to store it to detect drift."""
    actual = [(r[0], r[1]) for r in conn.sql(f"DESCRIBE {table}").fetchall()]
    declared = TABLES[table].declared_columns()
    missing = [f"{n} {t}" for n, t in declared if (n, t) not in actual]
    extra = [f"{n} {t}" for n, t in actual if (n, t) not in declared]
    return Verdict(not missing and not extra, {"missing_or_changed": ", ".join(missing) or "none",
                                               "not_declared": ", ".join(extra) or "none"},
                   "columns match the declared schema" if not (missing or extra) else "the table drifted from the code")


SCHEMA_CHECKED = ["raw_ticks", "raw_trades", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "anomalies",
                  "trade_bars_1s", "trade_bars_1m", "trade_bars_1h"]


SPECS = [
    dg.AssetCheckSpec(f"{t}_schema_matches_code", asset=t,
                      description="the warehouse table has exactly the columns and types the code declares")
    for t in SCHEMA_CHECKED
]


@dg.multi_asset_check(specs=SPECS, name="warehouse_schema", can_subset=True)
def warehouse_schema(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource):
    with lakehouse.connect() as conn:
        for spec in SPECS:
            if spec.key in context.selected_asset_check_keys:
                v = schema_matches(conn, spec.asset_key.to_user_string())
                yield dg.AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=v.passed,
                                          metadata=v.metadata, description=v.description, severity=WARN)
