"""The frames every analysis and the selection policy start from, read from a warehouse.

``answers``: one row per graded regular answer (sample_index 0, gold known) on current data:
    query_id, context_id, kind, sleep_budget, test_budget, test_model, variant_id, correct (bool),
    completion_tokens, prompt_tokens, cost_usd
``passk``: the extra raw-context samples (sample_index > 0), same columns plus sample_index
``sleep``: one row per (context_id, sleep_budget) with variants: sleep_tokens (completion tokens
    summed over the k samples), sleep_cost_usd, samples
``variants``: current variants: variant_id, context_id, sleep_budget, sample_index, text,
    completion_tokens
``queries``: current queries: query_id, context_id, text, gold_answer, kind
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

_ANSWERS = """
SELECT a.query_id, a.context_id, coalesce(q.kind, 'unknown') AS kind, a.sleep_budget, a.test_budget,
       a.test_model, a.variant_id, a.correct, a.completion_tokens, a.prompt_tokens, a.cost_usd, a.sample_index
FROM answers_current a
JOIN queries_current q ON q.query_id = a.query_id AND q.context_hash = a.context_hash
WHERE a.correct IS NOT NULL
"""


@dataclass
class AnalysisFrames:
    answers: pd.DataFrame
    passk: pd.DataFrame
    sleep: pd.DataFrame
    variants: pd.DataFrame
    queries: pd.DataFrame


def load_frames(con: duckdb.DuckDBPyConnection) -> AnalysisFrames:
    graded = con.execute(_ANSWERS).df()
    graded["correct"] = graded["correct"].astype(bool)
    answers = graded[graded["sample_index"] == 0].drop(columns="sample_index").reset_index(drop=True)
    passk = graded[graded["variant_id"].isna()].reset_index(drop=True)
    sleep = con.execute(
        "SELECT context_id, sleep_budget, sum(completion_tokens) AS sleep_tokens, sum(cost_usd) AS sleep_cost_usd, "
        "count(*) AS samples FROM variants_current GROUP BY ALL"
    ).df()
    variants = con.execute(
        "SELECT variant_id, context_id, sleep_budget, sample_index, text, completion_tokens FROM variants_current"
    ).df()
    queries = con.execute("SELECT query_id, context_id, text, gold_answer, kind FROM queries_current").df()
    return AnalysisFrames(answers, passk, sleep, variants, queries)
