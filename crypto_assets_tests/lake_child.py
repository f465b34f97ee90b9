"""Run lake compaction or the export in a child process, so a test can SIGKILL it at a fault
point (see crypto_assets.faults) or run it beside the parent.

Usage: python -m crypto_assets_tests.lake_child compact <lake_root> <now ISO> [<stop file>]
       python -m crypto_assets_tests.lake_child export <CRYPTO_HOME> [<dataset>]
With a stop file, compaction repeats until that file exists, touching <stop file>.started after
the first pass (for the concurrency test).
"""

import json
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import duckdb

from crypto_assets.warehouse.lake_compaction import compact_lake
from crypto_assets_tests.lake_helpers import export

if __name__ == "__main__":
    if sys.argv[1] == "compact":
        lake, now = Path(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
        stop = Path(sys.argv[4]) if len(sys.argv) > 4 else None
        passes = days = 0
        while True:
            res = compact_lake(lake, now=now)
            passes, days = passes + 1, days + res.total("days_compacted")
            if stop is None or stop.exists():
                break
            Path(f"{stop}.started").touch()
            time.sleep(0.01)
        print(json.dumps({"passes": passes, "days_compacted": days}))
    else:
        # the warehouse opened as LakehouseResource.connect does, without importing dagster (4 s)
        home = Path(sys.argv[2])
        conn = duckdb.connect(str(home / "warehouse.duckdb"))
        conn.execute("SET TimeZone = 'UTC'")
        print(json.dumps(asdict(export(conn, home / "lake", *sys.argv[3:4]))))
        conn.close()
