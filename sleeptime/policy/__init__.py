"""The selection policy: per query, the cheapest option (sleep budget, test budget) such that
the expected accuracy over the query mix reaches a target with confidence, and per context the
sleep budget its expected traffic pays for.

``fit_policy`` fits it at publish time; the rows it stores are the policy (``Policy.from_rows``),
and ``Policy.select`` is the one selection API (the service only maps its choice to HTTP).
"""

from sleeptime.policy._fit import SleepCosts, fit_policy, required_accuracy
from sleeptime.policy._heldout import HeldOutReport, HeldOutSplit, frontier, held_out_check, split_queries, sweep_targets
from sleeptime.policy._policy import Choice, Policy, Selection, Unsatisfiable
from sleeptime.policy._fit import ANY_KIND, CORPUS, RAW
from sleeptime.policy._wilson import wilson_lower_bound
from sleeptime.policy_settings import PolicySettings

__all__ = [
    "ANY_KIND",
    "CORPUS",
    "Choice",
    "HeldOutReport",
    "HeldOutSplit",
    "Policy",
    "PolicySettings",
    "RAW",
    "Selection",
    "SleepCosts",
    "Unsatisfiable",
    "fit_policy",
    "frontier",
    "held_out_check",
    "required_accuracy",
    "split_queries",
    "sweep_targets",
    "wilson_lower_bound",
]
