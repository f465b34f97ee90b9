"""CPU priority for the batch work (training set, Spark training) that shares the machine with
the live fresh path.

A retrain on a month of history keeps both cores busy for minutes; at equal priority the
incremental run's passes wait their turn and freshness suffers. Training at a higher niceness
(10 by default: a CFS weight of 110 against the fresh path's 1024) leaves it the CPU whenever it
wants some, while training still gets every idle cycle, so a retrain on an idle machine is not
slower. Niceness is per process and only ever raised (an unprivileged process cannot lower it
again), and the Spark JVM started afterwards inherits it; the training job runs in one process
(in_process executor), so the whole run is affected and nothing else.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field


class ComputePriorityResource(dg.ConfigurableResource):
    """The niceness training steps run at (`TRAINING_NICE`; 0 leaves the priority alone)."""

    nice: int = Field(default=10, ge=0, le=19, description="niceness of training steps (0: unchanged)")

    def lower(self, log=None) -> int:
        """Raise this process's niceness to `nice` (never lowers it); returns the niceness now."""
        current = os.nice(0)
        if self.nice > current:
            current = os.nice(self.nice - current)
            if log is not None:
                log.info(f"training at niceness {current}: the live fresh path keeps the CPU when it needs it")
        return current
