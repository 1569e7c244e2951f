"""sleeptime: sleep-time compute for persistent contexts.

The core package: domain types, prompts, budgets, the model gateway, the reference reasoner,
corpora, the selection policy and the cost model. It imports neither Prefect nor Ray; the
orchestration lives in the top-level ``tasks`` and ``flows`` packages.
"""

from sleeptime import _env  # noqa: F401  (offline defaults before any dependency is imported)

__version__ = "0.1.0"
