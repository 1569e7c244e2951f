"""Named crash points for recovery tests: ``SLEEPTIME_FAILPOINT=<name>`` makes the process
SIGKILL itself when it reaches that point.

A kill from outside cannot aim at a window of a few milliseconds (between the lake commit and
the warehouse switch, say); these points make every such window testable with a real,
uncatchable SIGKILL. Unset, each costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SLEEPTIME_FAILPOINT"

# The points, in the order a publish passes them.
PUBLISH_AFTER_BUILD = "publish.after-build"  # candidate warehouse has the delta, not gated
PUBLISH_AFTER_GATE = "publish.after-gate"  # gate passed, nothing committed
PUBLISH_MID_COMMIT = "publish.mid-commit"  # inside the lake transaction: some tables moved, not committed
PUBLISH_BEFORE_SWAP = "publish.before-swap"  # lake committed, the warehouse not yet switched
PUBLISH_AFTER_SWAP = "publish.after-swap"  # warehouse switched, the run not yet finished
BATCH_AFTER_SUBMIT = "batch.after-submit"  # a provider batch submitted and recorded, its results not collected
POINTS = (PUBLISH_AFTER_BUILD, PUBLISH_AFTER_GATE, PUBLISH_MID_COMMIT, PUBLISH_BEFORE_SWAP, PUBLISH_AFTER_SWAP)


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
