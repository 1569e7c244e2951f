"""Environment defaults that keep every dependency offline, on loopback and quiet.

Imported first by the package; ``setdefault`` so a user's explicit setting always wins.
Facts behind each line: ../shared/stack-notes.md.
"""

import os

_DEFAULTS = {
    # Otherwise `import litellm` downloads the price map and starts a retry thread.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "False",
    # Ray's loopback and authentication settings are not here: they belong to the cluster, and
    # the Ray executor applies them only to a Ray it starts for itself (tasks/ray_pool.py).
    "RAY_USAGE_STATS_ENABLED": "0",
    # The ephemeral Prefect server once missed its 20 s start under load.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_defaults() -> None:
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)


apply_offline_defaults()
