"""Training steps lower their CPU priority, and what they start afterwards (the Spark JVM)
inherits it. In a child process: niceness cannot be lowered again by this test process."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, subprocess
from crypto_assets.resources.priority import ComputePriorityResource
before = os.nice(0)
r = ComputePriorityResource(nice=7)
first, again = r.lower(), r.lower()
spawned = subprocess.run(["sh", "-c", "cut -d' ' -f19 /proc/$$/stat"], capture_output=True, text=True).stdout.strip()
print(before, first, again, spawned, ComputePriorityResource(nice=0).lower())
"""


def test_lower_raises_niceness_once_and_children_inherit_it():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split()
    before, first, again, spawned, zero = map(int, out)
    assert before == 0
    assert (first, again, spawned) == (7, 7, 7)  # raised to 7 once, not 14; the child runs at 7
    assert zero == 7  # nice=0 leaves it alone, never lowers


def test_settings_read_training_nice():
    from crypto_assets.settings import build_resources

    assert build_resources({})["compute_priority"].nice == 10
    assert build_resources({"TRAINING_NICE": "0"})["compute_priority"].nice == 0
