"""Data quality: the great-expectations gate a candidate snapshot must pass before it is published.

Importing this package is cheap; great-expectations itself (about 4 s) is imported on the first
``validate_snapshot`` call.
"""

from sleeptime.quality.gate import SUITES, FailedExpectation, GateResult, validate_snapshot

__all__ = ["SUITES", "FailedExpectation", "GateResult", "validate_snapshot"]
