"""Schema drift: each warehouse table against the columns the code declares (one step, run with
training and full runs: schemas change with code, not with data)."""

import dagster as dg

from crypto_assets.defs import checks
from crypto_assets.resources import LakehouseResource

SPECS = [
    dg.AssetCheckSpec(f"{t}_schema_matches_code", asset=t,
                      description="the warehouse table has exactly the columns and types the code declares")
    for t in checks.SCHEMA_CHECKED
]


@dg.multi_asset_check(specs=SPECS, name="warehouse_schema", can_subset=True)
def warehouse_schema(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource):
    with lakehouse.connect() as conn:
        for spec in SPECS:
            if spec.key in context.selected_asset_check_keys:
                v = checks.schema_matches(conn, spec.asset_key.to_user_string())
                yield dg.AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=v.passed,
                                          metadata=v.metadata, description=v.description, severity=checks.WARN)
