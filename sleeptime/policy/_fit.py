"""The selection policy: for each query, the cheapest (sleep budget, test budget) that is
adequate, where adequate means the Wilson lower bound on its measured accuracy reaches a target.

Cost per query follows the published formula (sleep-time tokens weighted 1, test-time tokens
weighted t = 10, sleep cost amortized over the queries asked of a context):

    cost_weighted = sleep_tokens_per_context / expected_queries_per_context + t * mean_test_tokens
    cost_usd      = sleep_cost_usd_per_context / expected_queries_per_context + mean_test_cost_usd

Measurements are pooled in three scopes, from most to least specific: one context (when it has
at least ``min_context_queries`` labeled queries), one query kind, the whole corpus. A query
uses the most specific scope that has an adequate option; when no scope has one, it falls back
to the raw context at the largest test budget.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sleeptime.policy._wilson import wilson_lower_bounds

RAW = "none"
CORPUS = "*"
SCOPES = ("context", "kind", "corpus")
FALLBACK_REASON = "no option's Wilson lower bound reaches the target"

ANSWER_COLUMNS = (
    "query_id", "context_id", "kind", "sleep_budget", "test_budget", "correct", "completion_tokens", "cost_usd",
)
SLEEP_COLUMNS = ("context_id", "sleep_budget", "sleep_tokens", "sleep_cost_usd")
TABLE_COLUMNS = (
    "scope", "scope_value", "sleep_budget", "test_budget", "n", "correct", "accuracy", "wilson_lower",
    "mean_test_tokens", "mean_test_cost_usd", "sleep_tokens_per_context", "sleep_cost_usd_per_context",
    "cost_weighted", "cost_usd", "adequate", "chosen",
)


@dataclass(frozen=True)
class PolicySettings:
    target_accuracy: float = 0.9
    z: float = 1.96
    test_token_weight: float = 10.0
    expected_queries_per_context: float = 10.0
    min_context_queries: int = 10
    cost_metric: Literal["weighted_tokens", "usd"] = "weighted_tokens"
    test_budget_order: tuple[str, ...] = ()  # cheapest .. largest, optional

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.z < 0:
            raise ValueError(f"z must be >= 0, got {self.z}")
        if self.test_token_weight < 0:
            raise ValueError(f"test_token_weight must be >= 0, got {self.test_token_weight}")
        if self.expected_queries_per_context <= 0:
            raise ValueError(f"expected_queries_per_context must be > 0, got {self.expected_queries_per_context}")
        if self.min_context_queries < 1:
            raise ValueError(f"min_context_queries must be >= 1, got {self.min_context_queries}")
        if self.cost_metric not in ("weighted_tokens", "usd"):
            raise ValueError(f"cost_metric must be 'weighted_tokens' or 'usd', got {self.cost_metric!r}")
        object.__setattr__(self, "test_budget_order", tuple(self.test_budget_order))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Choice:
    sleep_budget: str
    test_budget: str
    scope: str
    scope_value: str
    predicted_accuracy: float
    wilson_lower: float
    cost_weighted: float
    cost_usd: float
    fallback: bool
    reason: str

    @property
    def option(self) -> tuple[str, str]:
        return (self.sleep_budget, self.test_budget)


def rank_options(frame: pd.DataFrame, settings: PolicySettings) -> pd.DataFrame:
    """``frame`` sorted cheapest first: by the chosen cost metric, then the other one, then the
    higher Wilson lower bound, then by name (deterministic)."""
    primary, secondary = (
        ("cost_weighted", "cost_usd") if settings.cost_metric == "weighted_tokens" else ("cost_usd", "cost_weighted")
    )
    keyed = frame.assign(_neg_lb=-frame["wilson_lower"]) if "wilson_lower" in frame else frame.assign(_neg_lb=0.0)
    return keyed.sort_values(
        [primary, secondary, "_neg_lb", "sleep_budget", "test_budget"], kind="mergesort"
    ).drop(columns="_neg_lb")


def _prepare_answers(answers: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if missing:
        raise ValueError(f"answers frame lacks columns {missing}")
    df = answers.loc[answers["correct"].notna(), list(ANSWER_COLUMNS)].copy()
    for col in ("query_id", "context_id", "sleep_budget", "test_budget"):
        df[col] = df[col].astype(str)
    df["kind"] = df["kind"].fillna("unknown").astype(str)
    df["correct"] = df["correct"].astype(bool)
    df["completion_tokens"] = pd.to_numeric(df["completion_tokens"]).astype(float)
    df["cost_usd"] = pd.to_numeric(df["cost_usd"]).fillna(0.0).astype(float)
    return df.reset_index(drop=True)


def _prepare_sleep(sleep: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in SLEEP_COLUMNS if c not in sleep.columns]
    if missing:
        raise ValueError(f"sleep frame lacks columns {missing}")
    df = sleep.loc[:, list(SLEEP_COLUMNS)].copy()
    df["context_id"] = df["context_id"].astype(str)
    df["sleep_budget"] = df["sleep_budget"].astype(str)
    df["sleep_tokens"] = pd.to_numeric(df["sleep_tokens"]).fillna(0.0).astype(float)
    df["sleep_cost_usd"] = pd.to_numeric(df["sleep_cost_usd"]).fillna(0.0).astype(float)
    df = df[df["sleep_budget"] != RAW]
    # One row per (context, budget) by contract; sum defensively if a caller passes samples apart.
    return df.groupby(["context_id", "sleep_budget"], as_index=False)[["sleep_tokens", "sleep_cost_usd"]].sum()


class SleepCosts:
    """Sleep-time tokens and USD per context for a sleep budget ("none" costs nothing); a
    context without a row for a budget gets that budget's mean over contexts."""

    def __init__(self, sleep: pd.DataFrame):
        self.frame = _prepare_sleep(sleep)
        f = self.frame  # columns as lists: iterating Arrow-backed rows one by one is slow
        self._per_context = {
            (c, b): (float(t), float(u))
            for c, b, t, u in zip(
                f["context_id"].tolist(), f["sleep_budget"].tolist(), f["sleep_tokens"].tolist(), f["sleep_cost_usd"].tolist()
            )
        }
        means = self.frame.groupby("sleep_budget")[["sleep_tokens", "sleep_cost_usd"]].mean()
        self._mean = {b: (float(r.sleep_tokens), float(r.sleep_cost_usd)) for b, r in means.iterrows()}

    def mean(self, budget: str) -> tuple[float, float]:
        if budget == RAW:
            return (0.0, 0.0)
        if budget not in self._mean:
            raise ValueError(f"answers use sleep budget {budget!r} but the sleep frame has no row for it")
        return self._mean[budget]

    def for_context(self, context_id: str, budget: str) -> tuple[float, float]:
        if budget == RAW:
            return (0.0, 0.0)
        return self._per_context.get((context_id, budget)) or self.mean(budget)


def _scope_rows(df: pd.DataFrame, scope: str, key: str | None) -> pd.DataFrame:
    keys = ([key] if key else []) + ["sleep_budget", "test_budget"]
    grouped = df.groupby(keys, sort=True)
    sums = grouped[["correct", "completion_tokens", "cost_usd"]].sum()
    n = grouped.size()
    out = pd.DataFrame({
        "n": n,
        "correct": sums["correct"],
        "mean_test_tokens": sums["completion_tokens"] / n,
        "mean_test_cost_usd": sums["cost_usd"] / n,
    }).reset_index()
    out.insert(0, "scope", scope)
    out.insert(1, "scope_value", out.pop(key).astype(str) if key else CORPUS)
    return out


def _build_table(df: pd.DataFrame, costs: SleepCosts, settings: PolicySettings) -> pd.DataFrame:
    per_context = df.groupby("context_id")["query_id"].nunique()
    eligible = per_context[per_context >= settings.min_context_queries].index
    parts = [
        _scope_rows(df[df["context_id"].isin(eligible)], "context", "context_id"),
        _scope_rows(df, "kind", "kind"),
        _scope_rows(df, "corpus", None),
    ]
    table = pd.concat([p for p in parts if len(p)], ignore_index=True)
    table["n"] = table["n"].astype(int)
    table["correct"] = table["correct"].astype(int)
    table["accuracy"] = table["correct"] / table["n"]
    table["wilson_lower"] = wilson_lower_bounds(table["correct"].to_numpy(), table["n"].to_numpy(), settings.z)
    sleep_cost = [
        costs.for_context(value, budget) if scope == "context" else costs.mean(budget)
        for scope, value, budget in zip(table["scope"].tolist(), table["scope_value"].tolist(), table["sleep_budget"].tolist())
    ]
    table["sleep_tokens_per_context"] = [t for t, _ in sleep_cost]
    table["sleep_cost_usd_per_context"] = [u for _, u in sleep_cost]
    q = settings.expected_queries_per_context
    table["cost_weighted"] = (
        table["sleep_tokens_per_context"] / q + settings.test_token_weight * table["mean_test_tokens"]
    )
    table["cost_usd"] = table["sleep_cost_usd_per_context"] / q + table["mean_test_cost_usd"]
    table["adequate"] = table["wilson_lower"] >= settings.target_accuracy
    table["chosen"] = False
    adequate = rank_options(table[table["adequate"]], settings)
    first = adequate.groupby(["scope", "scope_value"], sort=False).head(1).index
    table.loc[first, "chosen"] = True
    order = {s: i for i, s in enumerate(SCOPES)}
    table = table.assign(_scope=table["scope"].map(order))
    table = table.sort_values(["_scope", "scope_value", "sleep_budget", "test_budget"], kind="mergesort")
    return table.drop(columns="_scope").reset_index(drop=True)[list(TABLE_COLUMNS)]


def _version(settings: PolicySettings, answers: pd.DataFrame, sleep: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(settings.to_json().encode())
    digest.update(b"\nanswers\n")
    _csv_digest(digest, answers, list(ANSWER_COLUMNS))
    digest.update(b"\nsleep\n")
    _csv_digest(digest, sleep, ["context_id", "sleep_budget"])
    return "p_" + digest.hexdigest()[:16]


_FLOAT_FORMAT = "%.10g"
_CSV_QUOTED = r'[,"\r\n]'  # characters that make the csv module quote a field
_CSV_BATCH = 500_000


def _csv_digest(digest: Any, frame: pd.DataFrame, by: list[str]) -> None:
    """Feed ``digest`` the bytes of ``frame.sort_values(by, kind="mergesort").to_csv(index=False,
    float_format="%.10g")``: the same bytes, so versions stay what they were.

    pandas formats every value of a frame in Python, which took about 40 s for 3.6M answers
    (bench/warehouse_scale.py). Here each column is factorized (sorted distinct values and a code
    per row, as sort_values does it), the rows are ordered by a stable lexsort of the codes (as
    sort_values does it), each distinct value is formatted once, and Arrow joins the lines.
    Frames whose CSV would need quoting, NaN, -0.0 or an unusual dtype take pandas' own path.
    """
    columns = _csv_columns(frame)
    if columns is None:
        ordered = frame.sort_values(by, kind="mergesort")
        digest.update(ordered.to_csv(index=False, float_format=_FLOAT_FORMAT).encode())
        return
    digest.update((",".join(str(name) for name in frame.columns) + os.linesep).encode())
    codes_of = dict(zip(frame.columns, (codes for _, codes in columns)))
    order = np.lexsort([codes_of[name] for name in reversed(by)]) if len(frame) else np.arange(0)
    for start in range(0, len(order), _CSV_BATCH):
        rows = order[start : start + _CSV_BATCH]
        fields = [pc.take(text, pa.array(codes[rows])) for text, codes in columns]
        lines = pc.binary_join_element_wise(*fields, ",")
        lines = pc.binary_join_element_wise(lines, "", os.linesep)  # every line ends with the terminator
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
        digest.update(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])


def _csv_columns(frame: pd.DataFrame) -> list[tuple[pa.Array, np.ndarray]] | None:
    """Per column: the text the csv module writes for each distinct value, in sorted order, and
    each row's code into it; None when this path cannot promise pandas' bytes."""
    if frame.columns.has_duplicates or any(ch in str(name) for name in frame.columns for ch in ',"\r\n'):
        return None
    out: list[tuple[pa.Array, np.ndarray]] = []
    try:
        for name in frame.columns:
            series = frame[name]
            dtype = series.dtype
            if isinstance(dtype, np.dtype) and dtype.kind == "f":
                values = series.to_numpy()
                if np.isnan(values).any() or (np.signbit(values) & (values == 0)).any():
                    return None
            elif not (isinstance(dtype, np.dtype) and dtype.kind in "biu") and not isinstance(dtype, pd.StringDtype):
                return None
            codes, distinct = pd.factorize(series, sort=True)
            if len(codes) and codes.min() < 0:  # a missing value
                return None
            if isinstance(dtype, pd.StringDtype):
                text = pa.array(np.asarray(distinct, dtype=object), pa.string())
                if pc.any(pc.match_substring_regex(text, _CSV_QUOTED)).as_py():
                    return None
            elif dtype.kind == "f":
                text = pa.array([_FLOAT_FORMAT % v for v in np.asarray(distinct)], pa.string())
            else:
                text = pa.array([str(v) for v in np.asarray(distinct)], pa.string())
            out.append((text, np.asarray(codes, dtype=np.int64)))
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fmt_cost(row: Any, metric: str) -> str:
    if metric == "usd":
        return f"${row['cost_usd']:.6f} ({row['cost_weighted']:.1f} weighted tokens)"
    return f"{row['cost_weighted']:.1f} weighted tokens (${row['cost_usd']:.6f})"


@dataclass
class Policy:
    version: str
    settings: PolicySettings
    table: pd.DataFrame
    # Kinds of the labeled queries of each context in the fitted data (for explain()).
    context_kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Labeled queries per context in the fitted data (for explain()).
    context_queries: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        chosen = self.table[self.table["chosen"]]
        self._chosen: dict[tuple[str, str], dict[str, Any]] = {
            (r["scope"], r["scope_value"]): r for r in chosen.to_dict("records")
        }
        self._fallback_row = self._pick_fallback()

    # -- choosing ---------------------------------------------------------------------------
    def _pick_fallback(self) -> dict[str, Any] | None:
        corpus = self.table[self.table["scope"] == "corpus"]
        if corpus.empty:
            return None
        raw = corpus[corpus["sleep_budget"] == RAW]
        pool = raw if len(raw) else corpus
        order = {name: i for i, name in enumerate(self.settings.test_budget_order)}
        ordered = pool[pool["test_budget"].isin(order)]
        if len(ordered):
            ranked = ordered.assign(_r=ordered["test_budget"].map(order)).sort_values(
                ["_r", "sleep_budget"], ascending=[False, True], kind="mergesort"
            )
        else:
            ranked = pool.assign(_r=pool["mean_test_tokens"]).sort_values(
                ["_r", "test_budget", "sleep_budget"], ascending=[False, True, True], kind="mergesort"
            )
        return ranked.drop(columns="_r").iloc[0].to_dict()

    def _scopes_for(self, context_id: str, kind: str | None) -> list[tuple[str, str]]:
        scopes = [("context", str(context_id))]
        if kind is not None and not (pd.api.types.is_scalar(kind) and pd.isna(kind)):
            scopes.append(("kind", str(kind)))
        scopes.append(("corpus", CORPUS))
        return scopes

    def choose(self, context_id: str, kind: str | None) -> Choice:
        target = self.settings.target_accuracy
        for scope, value in self._scopes_for(context_id, kind):
            row = self._chosen.get((scope, value))
            if row is not None:
                return Choice(
                    sleep_budget=row["sleep_budget"], test_budget=row["test_budget"], scope=scope, scope_value=value,
                    predicted_accuracy=float(row["accuracy"]), wilson_lower=float(row["wilson_lower"]),
                    cost_weighted=float(row["cost_weighted"]), cost_usd=float(row["cost_usd"]), fallback=False,
                    reason=(
                        f"cheapest option in scope {scope}={value} whose Wilson lower bound "
                        f"{float(row['wilson_lower']):.3f} reaches the target {target:g}"
                    ),
                )
        row = self._fallback_row
        if row is None:
            raise ValueError("the policy was fitted on no labeled answers; it cannot choose")
        return Choice(
            sleep_budget=row["sleep_budget"], test_budget=row["test_budget"], scope="corpus", scope_value=CORPUS,
            predicted_accuracy=float(row["accuracy"]), wilson_lower=float(row["wilson_lower"]),
            cost_weighted=float(row["cost_weighted"]), cost_usd=float(row["cost_usd"]), fallback=True,
            reason=f"{FALLBACK_REASON} {target:g}; raw context at the largest test budget",
        )

    # -- explaining ---------------------------------------------------------------------------
    def _rejection(self, row: dict[str, Any]) -> str:
        target = self.settings.target_accuracy
        if row["accuracy"] >= target:
            why = (
                f"not enough data: accuracy {row['accuracy']:.3f} meets the target but n={row['n']} gives "
                f"Wilson LB {row['wilson_lower']:.3f} < {target:g}"
            )
        else:
            why = f"Wilson LB {row['wilson_lower']:.3f} below target {target:g} (accuracy {row['accuracy']:.3f}, n={row['n']})"
        return f"{row['sleep_budget']} + {row['test_budget']} (cost {_fmt_cost(row, self.settings.cost_metric)}): {why}"

    def _skipped_scope(self, scope: str, value: str, context_id: str) -> str:
        target = self.settings.target_accuracy
        rows = self.table[(self.table["scope"] == scope) & (self.table["scope_value"] == value)]
        if scope == "context" and rows.empty:
            have = self.context_queries.get(context_id, 0)
            return (
                f"scope context={value} not used: {have} labeled queries "
                f"(< {self.settings.min_context_queries} needed)"
            )
        if rows.empty:
            return f"scope {scope}={value} not used: no labeled answers"
        best = rows.sort_values("wilson_lower", ascending=False, kind="mergesort").iloc[0]
        return (
            f"scope {scope}={value} not used: no option's Wilson LB reaches {target:g} "
            f"(best {best['sleep_budget']} + {best['test_budget']}: LB {best['wilson_lower']:.3f}, n={best['n']})"
        )

    def _explain_kind(self, context_id: str, kind: str | None) -> list[str]:
        choice = self.choose(context_id, kind)
        label = f"kind {kind!r}" if kind is not None else "any kind"
        lines = []
        for scope, value in self._scopes_for(context_id, kind):
            if scope == choice.scope and value == choice.scope_value and not choice.fallback:
                break
            lines.append("    " + self._skipped_scope(scope, value, context_id))
        metric = self.settings.cost_metric
        if choice.fallback:
            head = (
                f"  {label}: FALLBACK -> {choice.sleep_budget} + {choice.test_budget} (raw context at the largest "
                f"test budget): {choice.reason}; measured accuracy {choice.predicted_accuracy:.3f}, "
                f"Wilson LB {choice.wilson_lower:.3f}"
            )
            return [head, *lines]
        rows = self.table[(self.table["scope"] == choice.scope) & (self.table["scope_value"] == choice.scope_value)]
        ranked = rank_options(rows, self.settings).to_dict("records")
        chosen_at = next(
            i for i, r in enumerate(ranked) if (r["sleep_budget"], r["test_budget"]) == choice.option
        )
        row = ranked[chosen_at]
        head = (
            f"  {label}: scope {choice.scope}={choice.scope_value} -> {choice.sleep_budget} + {choice.test_budget}: "
            f"accuracy {row['accuracy']:.3f}, Wilson LB {row['wilson_lower']:.3f} >= {self.settings.target_accuracy:g}, "
            f"n={row['n']}, cost {_fmt_cost(row, metric)}"
        )
        cheaper = ranked[:chosen_at]
        out = [head, *lines]
        if cheaper:
            out.append(f"    rejected cheaper options in scope {choice.scope}={choice.scope_value}:")
            out += [f"      - {self._rejection(r)}" for r in cheaper]
        else:
            out.append("    no cheaper option was measured in this scope")
        return out

    def explain(self, context_id: str) -> str:
        s = self.settings
        cost = (
            f"sleep tokens / {s.expected_queries_per_context:g} queries + {s.test_token_weight:g} x test tokens"
            if s.cost_metric == "weighted_tokens"
            else f"sleep USD / {s.expected_queries_per_context:g} queries + test USD"
        )
        lines = [
            f"Policy {self.version}: target accuracy {s.target_accuracy:g} (Wilson lower bound, z={s.z:g}); "
            f"cost = {cost}",
            f"Context {context_id}:",
        ]
        kinds: tuple[str | None, ...] = self.context_kinds.get(str(context_id), ())
        if not kinds:
            lines.append("  no labeled queries for this context in the fitted data; kinds from the table:")
            kinds = tuple(self.table.loc[self.table["scope"] == "kind", "scope_value"].drop_duplicates()) or (None,)
        for kind in kinds:
            lines += self._explain_kind(str(context_id), kind)
        return "\n".join(lines)

    # -- storage -----------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        settings_json = self.settings.to_json()
        return [
            {**{k: _plain(v) for k, v in row.items()}, "version": self.version, "settings_json": settings_json}
            for row in self.table.to_dict("records")
        ]


def fit_policy(answers: pd.DataFrame, sleep: pd.DataFrame, settings: PolicySettings = PolicySettings()) -> Policy:
    """Fit the policy table on labeled ``answers`` and the per-context ``sleep`` costs."""
    df = _prepare_answers(answers)
    if df.empty:
        raise ValueError("no labeled answers to fit a policy on")
    costs = SleepCosts(sleep)
    table = _build_table(df, costs, settings)
    # The sorted distinct kinds per context (a Python lambda per group took 9 s on 12.5k contexts).
    pairs = df[["context_id", "kind"]].drop_duplicates().sort_values(["context_id", "kind"], kind="mergesort")
    kinds: dict[str, list[str]] = {}
    for context_id, kind in zip(pairs["context_id"].tolist(), pairs["kind"].tolist()):
        kinds.setdefault(str(context_id), []).append(kind)
    queries = df.groupby("context_id")["query_id"].nunique()
    return Policy(
        version=_version(settings, df, costs.frame),
        settings=settings,
        table=table,
        context_kinds={k: tuple(v) for k, v in kinds.items()},
        context_queries={str(k): int(v) for k, v in queries.items()},
    )
