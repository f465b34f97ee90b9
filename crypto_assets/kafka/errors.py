"""The one error every Kafka client here raises when the broker cannot be reached.

It lives apart from the clients so the resource, the embedded broker's discovery, the producer,
the outbox, the lag reader and the pull can all raise and catch the same class without importing
each other.
"""

from __future__ import annotations


class BrokerUnavailable(RuntimeError):
    """Kafka cannot be reached (or no broker is configured); nothing was advanced."""


def unreachable(bootstrap: str, exc: BaseException | str) -> BrokerUnavailable:
    """`Kafka broker at <address> is unreachable: <why>`: the first words of every such error."""
    return BrokerUnavailable(f"Kafka broker at {bootstrap} is unreachable: {exc}")
