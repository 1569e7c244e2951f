"""Query predictability: does sleep time help more on questions the context anticipates?

The paper scores each question by log P(question | context) under a 70B base model and finds the gain
of sleep time over test-time-only grows with it. :func:`logprob_scores` computes that measure with any
model whose provider returns prompt log-probabilities (llama.cpp's server, vLLM, OpenAI's legacy
completions); the embedded reference reasoner and many chat providers do not, so
:func:`predictability_scores` gives a documented text proxy. :func:`predictability_gain` takes
either.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from sleeptime.analysis.curves import NONE, graded_answers

# Function words of the question templates. "together", "end" and "start" are deliberately kept: they
# say which quantity is asked (a total, the value after the events, the value before them).
STOPWORDS = frozenset(
    "how many much does do did have has had would will could the a an of if and in at to is are was were "
    "what be after before".split()
)

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def words(text: str) -> set[str]:
    """Lowercase alphanumeric tokens, the unit both questions and c' lines are compared in."""
    return set(_WORD.findall(str(text).lower()))


def _question_words(texts: pd.Series, stopwords: frozenset[str]) -> list[set[str]]:
    """Content words of each question of one context: stopwords and tokens shared by every question of
    the context (the unit, "coins") are dropped because they cannot tell questions apart; the shared-
    token rule applies only with 3 or more questions, where sharing is not a coincidence of few."""
    sets = [words(t) - stopwords for t in texts]
    if len(sets) >= 3:
        common = set.intersection(*sets)
        sets = [s - common for s in sets]
    return sets


def line_words(line: str) -> set[str]:
    """Words of one stated fact; a fact with no time qualifier ("start" or "end") describes the set-up,
    as in the fragment and in plain English ("Jack has 36 shells."), so it also counts as saying "start"
    and a question "... at the start?" is not capped at a partial score by an implicit word."""
    found = words(line)
    return found if found & {"start", "end"} else found | {"start"}


def _lines(text: str) -> list[set[str]]:
    """c' split into lines and sentences (a period must be followed by whitespace, so "0.7" stays whole):
    one stated fact each in the notes S(c) writes."""
    return [line_words(part) for part in _SENTENCE.split(str(text)) if part.strip()]


def containment(question: set[str], lines: list[set[str]]) -> float:
    """Share of the question's content words found together in one line; NaN for a question with no
    content words, which carries no evidence either way."""
    if not question:
        return float("nan")
    return max((len(question & line) / len(question) for line in lines), default=0.0)


def predictability_scores(
    queries: pd.DataFrame,
    variants: pd.DataFrame,
    budget: str | None = None,
    stopwords: frozenset[str] = STOPWORDS,
) -> pd.DataFrame:
    """A per-query score in [0, 1] of how far c' already spells out the quantity asked for.

    score = max over lines of c' of |words(q) & words(line)| / |words(q)|, where words(q) are the
    question's content words (lowercase alphanumeric tokens minus ``stopwords`` and minus tokens every
    question of that context shares, e.g. the unit) and a line with no "start"/"end" counts as saying
    "start" (see :func:`line_words`). c' is the variant of ``budget`` (default: the
    sleep budget with the most completion tokens on average), sample 0. It is a text proxy for the
    paper's log P(q | c): a question whose entities and qualifiers appear in one stated fact of c' was
    anticipated. A provider's log-probabilities could replace it. Queries whose context has no such
    variant, or with no content words, score NaN. Columns: query_id, context_id, score.
    """
    columns = ["query_id", "context_id", "score"]
    if variants.empty or queries.empty:
        return pd.DataFrame(columns=columns)
    if budget is None:
        budget = str(variants.groupby("sleep_budget")["completion_tokens"].mean().idxmax())
    chosen = variants[(variants["sleep_budget"] == budget) & (variants["sample_index"] == 0)]
    notes = {cid: _lines(text) for cid, text in zip(chosen["context_id"], chosen["text"])}
    rows = []
    for context_id, group in queries.groupby("context_id", sort=False):
        lines = notes.get(context_id)
        for query_id, qwords in zip(group["query_id"], _question_words(group["text"], stopwords)):
            score = float("nan") if lines is None else containment(qwords, lines)
            rows.append({"query_id": query_id, "context_id": context_id, "score": score})
    return pd.DataFrame(rows, columns=columns)


# The prompt a question is scored in: the context, then the question as its continuation.
LOGPROB_PREFIX = "Context:\n{context}\n\nQuestion:"


async def logprob_scores(gateway, model: str, queries: pd.DataFrame, contexts: dict[str, str]) -> pd.DataFrame:
    """The paper's score: log P(question | context) under ``model`` (summed over the question's
    tokens), per query; NaN where the provider gives no log-probabilities or the context is
    unknown. ``queries`` has query_id, context_id and text; ``contexts`` maps context id to text.
    Columns: query_id, context_id, score (higher: more predictable)."""
    from sleeptime.model import continuation_logprob

    rows = []
    for query_id, context_id, text in zip(queries["query_id"], queries["context_id"], queries["text"]):
        context = contexts.get(context_id)
        score = None
        if context is not None:
            score = await continuation_logprob(gateway, model, LOGPROB_PREFIX.format(context=context), f" {text}")
        rows.append({"query_id": query_id, "context_id": context_id, "score": float("nan") if score is None else score})
    return pd.DataFrame(rows, columns=["query_id", "context_id", "score"])


def _spearman(a: pd.Series, b: pd.Series) -> float:
    """Rank correlation without scipy (Pearson on average ranks); NaN when either side is constant."""
    if len(a) < 2:
        return float("nan")
    ra, rb = a.rank(), b.rank()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def predictability_gain(
    answers: pd.DataFrame,
    scores: pd.DataFrame,
    test_budget: str,
    sleep_budget: str,
    quantiles: int = 5,
) -> tuple[dict, pd.DataFrame]:
    """The paper's predictability analysis: is the gain of sleep time larger on more predictable queries?

    Queries answered both raw ("none") and with ``sleep_budget`` at ``test_budget`` and with a score are
    split into ``quantiles`` equal-count groups by score. Scores tie a lot (many are exactly 1.0), so
    the split is qcut of rank(method="first"): tied queries are spread over adjacent groups by their
    order rather than lumped, keeping group sizes within one of each other. Fewer queries than
    quantiles means one group per query. Per group: n, mean/min/max score, raw and sleep accuracy,
    gain. Summary: ``trend`` = gain of the top group minus gain of the bottom group, ``spearman`` = rank
    correlation of score with per-query gain, and the per-group gains. Returns (summary, table).
    """
    graded = graded_answers(answers)
    at = graded[graded["test_budget"] == test_budget]
    raw = at[at["sleep_budget"] == NONE].groupby("query_id")["correct"].mean().rename("correct_none")
    slept = at[at["sleep_budget"] == sleep_budget].groupby("query_id")["correct"].mean().rename("correct_sleep")
    per = scores[["query_id", "score"]].dropna().drop_duplicates("query_id")
    per = per.join(raw, on="query_id", how="inner").join(slept, on="query_id", how="inner")
    per = per.sort_values(["score", "query_id"]).reset_index(drop=True)  # deterministic tie order
    per["gain"] = per["correct_sleep"].astype(float) - per["correct_none"].astype(float)
    summary: dict = {"test_budget": test_budget, "sleep_budget": sleep_budget, "n": len(per)}
    columns = ["quantile", "n", "mean_score", "min_score", "max_score", "accuracy_none", "accuracy_sleep", "gain"]
    if per.empty:
        return summary | {"trend": None, "spearman": None, "gain_per_quantile": []}, pd.DataFrame(columns=columns)
    bins = min(quantiles, len(per))
    per["quantile"] = pd.qcut(per["score"].rank(method="first"), bins, labels=range(1, bins + 1)).astype(int)
    table = (
        per.groupby("quantile")
        .agg(
            n=("query_id", "size"),
            mean_score=("score", "mean"),
            min_score=("score", "min"),
            max_score=("score", "max"),
            accuracy_none=("correct_none", "mean"),
            accuracy_sleep=("correct_sleep", "mean"),
        )
        .reset_index()
    )
    table["gain"] = table["accuracy_sleep"] - table["accuracy_none"]
    summary |= {
        "quantiles": bins,
        "trend": float(table["gain"].iloc[-1] - table["gain"].iloc[0]),
        "spearman": _spearman(per["score"], per["gain"]),
        "gain_per_quantile": [float(g) for g in table["gain"]],
        "mean_score_per_quantile": [float(s) for s in table["mean_score"]],
    }
    return summary, table[columns]
