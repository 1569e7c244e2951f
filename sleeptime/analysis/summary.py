"""Summaries of measured answers: accuracy and test-time tokens per budget pair."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def accuracy_table(
    answers: pd.DataFrame,
    variants: pd.DataFrame | None = None,
    sleep_order: Sequence[str] = (),
    test_order: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per (sleep budget, test budget): n, accuracy, mean test-time completion tokens,
    and the mean sleep-time completion tokens spent per context at that sleep budget."""
    labeled = answers[answers["correct"].notna()]
    if "sample_index" in labeled:
        labeled = labeled[labeled["sample_index"] == 0]  # extra pass@k samples are a separate baseline
    grouped = (
        labeled.groupby(["sleep_budget", "test_budget"], sort=False)
        .agg(
            n=("correct", "size"),
            accuracy=("correct", lambda s: float(s.astype(bool).mean())),
            mean_test_tokens=("completion_tokens", "mean"),
        )
        .reset_index()
    )
    sleep_tokens = {"none": 0.0}
    if variants is not None and len(variants):
        per_context = variants.groupby(["sleep_budget", "context_id"])["completion_tokens"].sum()
        sleep_tokens.update(per_context.groupby("sleep_budget").mean().to_dict())
    grouped["mean_sleep_tokens_per_context"] = grouped["sleep_budget"].map(sleep_tokens).astype(float)
    rank_sleep = {name: i for i, name in enumerate(sleep_order)}
    rank_test = {name: i for i, name in enumerate(test_order)}
    grouped["_s"] = grouped["sleep_budget"].map(lambda n: rank_sleep.get(n, len(rank_sleep)))
    grouped["_t"] = grouped["test_budget"].map(lambda n: rank_test.get(n, len(rank_test)))
    return grouped.sort_values(["_s", "_t", "sleep_budget", "test_budget"]).drop(columns=["_s", "_t"]).reset_index(drop=True)
