"""The selection policy: per query, the cheapest (sleep budget, test budget) whose Wilson lower
bound on measured accuracy reaches a target, with a held-out check against fixed pairs."""

from sleeptime.policy._fit import Choice, Policy, PolicySettings, fit_policy
from sleeptime.policy._heldout import HeldOutReport, held_out_check, split_queries
from sleeptime.policy._wilson import wilson_lower_bound

__all__ = [
    "Choice",
    "HeldOutReport",
    "Policy",
    "PolicySettings",
    "fit_policy",
    "held_out_check",
    "split_queries",
    "wilson_lower_bound",
]
