"""Named crash points for recovery tests: ``SLEEPTIME_FAILPOINT=<name>`` makes the process
SIGKILL itself when it reaches that point.

A kill from outside cannot aim at a window of a few milliseconds (between committing the lake
and switching the published snapshot, say); these points make every such window testable with
a real, uncatchable SIGKILL. Unset, each costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SLEEPTIME_FAILPOINT"

# The points, in the order a publish passes them.
PUBLISH_AFTER_BUILD = "publish.after-build"  # candidate built, not gated
PUBLISH_AFTER_GATE = "publish.after-gate"  # gate passed, nothing committed
PUBLISH_MID_COMMIT = "publish.mid-commit"  # some staged files moved into the lake, others not
PUBLISH_BEFORE_SWAP = "publish.before-swap"  # lake committed, snapshot not yet switched
PUBLISH_AFTER_SWAP = "publish.after-swap"  # switched, old snapshots not yet pruned
POINTS = (PUBLISH_AFTER_BUILD, PUBLISH_AFTER_GATE, PUBLISH_MID_COMMIT, PUBLISH_BEFORE_SWAP, PUBLISH_AFTER_SWAP)


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
