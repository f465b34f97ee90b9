"""Run one raw pull in a child process, so a test can SIGKILL it (see crypto_assets.faults).

Usage: python -m crypto_assets_tests.pull_child '<json kafka resource fields>' <home> <batch_size>
"""

import json
import sys

from crypto_assets.ingest.pull import PullConfig, pull_raw_ticks
from crypto_assets.resources import KafkaResource, LakehouseResource

if __name__ == "__main__":
    kafka = KafkaResource(**json.loads(sys.argv[1]))
    lakehouse = LakehouseResource(home=sys.argv[2])
    r = pull_raw_ticks(kafka, lakehouse, PullConfig(batch_size=int(sys.argv[3])))
    print(json.dumps({"messages": r.messages, "rows": r.rows_written, "quarantined": r.quarantined}))
