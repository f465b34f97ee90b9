"""Run one raw pull, or one anomalies pass with its alert outbox, in a child process, so a test
can SIGKILL it (see crypto_assets.faults).

Usage: python -m crypto_assets_tests.pull_child '<json kafka resource fields>' <home> <batch_size> [progress]
       python -m crypto_assets_tests.pull_child alerts '<json kafka resource fields>' '<json lakehouse fields>'

With `progress` the pull's log lines go to stdout as they happen: `batch <id>: ...` is printed
right after that batch's DuckDB transaction committed, so the parent knows a commit happened.
`alerts` runs what the incremental step's pass does for the anomalies: clean_ticks,
market_features, anomalies, then publish_alerts.
"""

import json
import logging
import sys

from crypto_assets.resources import KafkaResource, LakehouseResource


def _pull(argv: list[str]) -> None:
    from crypto_assets.ingest.config import PullConfig
    from crypto_assets.ingest.pull import pull_raw_ticks

    kafka = KafkaResource(**json.loads(argv[0]))
    lakehouse = LakehouseResource(home=argv[1])
    logger = None
    if len(argv) > 3 and argv[3] == "progress":
        logger = logging.getLogger("pull_child")
        handler = logging.StreamHandler(sys.stdout)  # flushes after every record
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    r = pull_raw_ticks(kafka, lakehouse, PullConfig(batch_size=int(argv[2])), logger=logger)
    print(json.dumps({"messages": r.messages, "rows": r.rows_written, "quarantined": r.quarantined}), flush=True)


def _alerts(argv: list[str]) -> None:
    from crypto_assets.transforms.anomalies import anomalies_increment, publish_alerts
    from crypto_assets.transforms.clean import clean_increment
    from crypto_assets.transforms.features import features_increment

    kafka = KafkaResource(**json.loads(argv[0]))
    lakehouse = LakehouseResource(**json.loads(argv[1]))
    with lakehouse.connect() as conn:
        clean_increment(conn, list(lakehouse.coins))
        features_increment(conn)
        new = anomalies_increment(conn)["new"]
        print(json.dumps({"new": new, "published": publish_alerts(conn, kafka)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "alerts":
        _alerts(sys.argv[2:])
    else:
        _pull(sys.argv[1:])
