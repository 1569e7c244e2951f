"""The published policy: built from its stored rows, and the one place selection happens.

``fit_policy`` turns its result into rows (``Policy.build``) and the in-memory policy is made from
those rows (``Policy.from_rows``), so the object the publish stores, the one the service loads
and the one ``policy explain`` shows are the same by construction. Row scopes:

* ``policy``: one row; ``detail_json`` has the fit's summary (required accuracy, price of
  accuracy, shrinkage strengths, traffic, allocation totals).
* ``corpus`` / ``kind``: every measured option, with its estimate for an average context of that
  kind (or of the kind mix); ``chosen`` marks the plan for a context the fit never saw.
* ``context``: the chosen option per (context, kind) and per (context, ``*``: kind unknown).
* ``allocation``: the sleep budget each known context gets (its c'), with its expected queries.
* ``allocation_default``: the sleep budget of an unseen context by its expected queries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sleeptime.policy._estimate import beta_lower
from sleeptime.policy._fit import ALLOCATION_GRID, ANY_KIND, CORPUS, RAW, _FitResult, _mix_choice, _mix_choices
from sleeptime.policy._wilson import wilson_lower_bounds
from sleeptime.policy_settings import PolicySettings
from sleeptime.storage.records import SCHEMAS

# The policies table's columns (records.py) but the version and settings, which policy_rows puts
# first, and the run id, which the publish adds.
ROW_COLUMNS = tuple(c for c in SCHEMAS["policies"].names if c not in ("policy_version", "settings_json", "run_id"))
FALLBACK_REASON = "no option's estimated lower bound reaches the target"


class Unsatisfiable(ValueError):
    """No option satisfies a request's caps (or none can run for the context)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Choice:
    """One option for one query, with what the policy predicts for it."""

    sleep_budget: str
    test_budget: str
    scope: str  # context | kind | corpus: where the prediction comes from
    scope_value: str
    kind: str
    n: int
    estimate: float | None
    estimate_lower: float | None
    cost_weighted: float | None
    cost_usd: float | None
    latency_ms: float | None
    fallback: bool = False
    reason: str = ""

    @property
    def option(self) -> tuple[str, str]:
        return (self.sleep_budget, self.test_budget)

    @property
    def predicted_accuracy(self) -> float | None:
        return self.estimate


@dataclass(frozen=True, slots=True)
class Selection:
    choices: tuple[Choice, ...]  # what to run first, then the failure chain
    target_accuracy: float
    fallback: bool
    reason: str

    @property
    def primary(self) -> Choice:
        return self.choices[0]

    @property
    def scope(self) -> str:
        return self.primary.scope

    @property
    def scope_value(self) -> str:
        return self.primary.scope_value


def _f(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _choice(row: Mapping[str, Any], **extra: Any) -> Choice:
    return Choice(
        sleep_budget=str(row["sleep_budget"]), test_budget=str(row["test_budget"]), scope=str(row["scope"]),
        scope_value=str(row["scope_value"]), kind=str(row["kind"]), n=int(row["n"] or 0),
        estimate=_f(row["estimate"]), estimate_lower=_f(row["estimate_lower"]), cost_weighted=_f(row["cost_weighted"]),
        cost_usd=_f(row["cost_usd"]), latency_ms=_f(row["mean_latency_ms"]), **extra,
    )


@dataclass
class Policy:
    version: str
    settings: PolicySettings
    table: pd.DataFrame  # every stored row but the context ones (kept small for the report and explain)
    summary: dict[str, Any]
    planned: _PlannedRows  # (context, kind or "*") -> the planned option
    defaults: dict[str, Choice]  # kind or "*" -> the plan of an unseen context
    pool: dict[str, tuple[Choice, ...]]  # kind or "*" -> measured options, best trade-off first
    allocation: dict[str, tuple[str, float]]  # context -> (sleep budget, expected queries)
    allocation_default: tuple[tuple[float, str], ...]  # (expected queries from, sleep budget)
    kinds: tuple[str, ...] = field(default_factory=tuple)
    # context -> ((expected queries from, sleep budget), ...): its allocation as traffic changes
    allocation_by_queries: dict[str, tuple[tuple[float, str], ...]] = field(default_factory=dict)

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Policy:
        """The policy from its stored rows (one version), exactly as published."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if frame.empty:
            raise ValueError("no policy rows")
        versions = frame["policy_version"].unique()
        if len(versions) != 1:
            raise ValueError(f"rows of {len(versions)} policy versions given; pass one version")
        head = frame[frame["scope"] == "policy"]
        if head.empty:
            raise ValueError(f"policy {versions[0]} has no 'policy' row: stored by an older release? publish again")
        settings = PolicySettings.from_json(head["settings_json"].iloc[0])
        summary = json.loads(head["detail_json"].iloc[0])
        lam = float(summary["lambda"])
        usd = settings.cost_metric == "usd"

        is_context = (frame["scope"] == "context").to_numpy()
        ctx = frame[is_context]
        unmet = not summary.get("target_met", False)
        plan_reason = (
            f"{FALLBACK_REASON} over the query mix: the plan is the most accurate one" if unmet
            else "the context's planned option: it minimises cost - price x accuracy for this context"
        )
        # Context rows stay columns; a Choice is made when a query asks (a reload at 12.5k contexts
        # would otherwise build 60k objects it may never use).
        planned = _PlannedRows(ctx, plan_reason, unmet)
        table = frame[~is_context].reset_index(drop=True)
        pool: dict[str, list[tuple[float, Choice]]] = {}
        defaults: dict[str, Choice] = {}
        for row in table[table["scope"].isin(["kind", "corpus"])].to_dict("records"):
            key = ANY_KIND if row["scope"] == "corpus" else str(row["kind"])
            choice = _choice(row)
            cost = (row["cost_usd"] if usd else row["cost_weighted"]) or 0.0
            score = cost - lam * (row["estimate"] if row["estimate"] == row["estimate"] else 0.0)
            pool.setdefault(key, []).append((score, choice))
            if row["chosen"]:
                defaults[key] = _choice(row, fallback=unmet, reason=(
                    plan_reason if unmet else "the plan of a context the fit never saw (an average context)"))
        alloc = table[table["scope"] == "allocation"]
        allocation = {
            str(c): (str(b), float(q))
            for c, b, q in zip(alloc["scope_value"].tolist(), alloc["sleep_budget"].tolist(), alloc["expected_queries"].tolist())
        }
        by_queries = {
            str(c): tuple((float(q), str(b)) for q, b in json.loads(d)["by_expected_queries"])
            for c, d in zip(alloc["scope_value"].tolist(), alloc["detail_json"].tolist()) if isinstance(d, str)
        }
        grid = table[table["scope"] == "allocation_default"].sort_values("expected_queries")
        return cls(
            version=str(versions[0]),
            settings=settings,
            table=table,
            summary=summary,
            planned=planned,
            defaults=defaults,
            pool={k: tuple(c for _, c in sorted(v, key=lambda sc: (sc[0], sc[1].sleep_budget, sc[1].test_budget)))
                  for k, v in pool.items()},
            allocation=allocation,
            allocation_by_queries=by_queries,
            allocation_default=tuple(zip(grid["expected_queries"].astype(float).tolist(), grid["sleep_budget"].tolist())),
            kinds=tuple(summary.get("kinds", ())),
        )

    # -- building (from a fit) ---------------------------------------------------------------
    @classmethod
    def build(cls, fit: _FitResult) -> Policy:
        rows = policy_rows(fit)
        policy = cls.from_rows(rows)
        policy._rows = rows
        return policy

    def rows(self) -> pd.DataFrame:
        """Every stored row (context rows included), as the publish stores them (without the run
        id); empty for a policy loaded from rows, which were published already."""
        return self._rows

    def records(self) -> list[dict[str, Any]]:
        """``rows()`` as dicts (NaN as None)."""
        frame = self._rows
        return frame.astype(object).where(frame.notna(), None).to_dict("records") if len(frame) else []

    # -- selection --------------------------------------------------------------------------
    def _kind(self, kind: str | None) -> str:
        if kind is None or (isinstance(kind, float) and math.isnan(kind)):
            return ANY_KIND
        return str(kind) if str(kind) in self.pool else ANY_KIND

    def planned_choice(self, context_id: str, kind: str | None) -> Choice:
        """The published plan for a query, before availability and request overrides."""
        k = self._kind(kind)
        found = self.planned.get((str(context_id), k))
        if found is not None:
            return found
        found = self.defaults.get(k) or self.defaults.get(ANY_KIND)
        if found is None:
            raise ValueError("the policy has no plan (it was fitted on no labeled answers)")
        return found

    def select(
        self,
        context_id: str,
        kind: str | None = None,
        *,
        available: Callable[[str, str], bool] | None = None,
        target_accuracy: float | None = None,
        max_cost: float | None = None,
        max_latency_ms: float | None = None,
    ) -> Selection:
        """What to run for one query: the published plan when it can run within the request's
        caps; otherwise, per query, the cheapest option whose estimated lower bound reaches the
        target (the request's, when it gives one), else the most accurate one within the caps.
        ``available(sleep_budget, test_budget)`` says whether an option can run for this context
        (its c' exists, its test budget is configured)."""
        policy_target = self.settings.target_accuracy
        target = policy_target if target_accuracy is None else float(target_accuracy)
        k = self._kind(kind)
        pool = self.pool.get(k) or self.pool.get(ANY_KIND, ())
        usd = self.settings.cost_metric == "usd"

        def runs(c: Choice) -> bool:
            return available is None or available(c.sleep_budget, c.test_budget)

        def within(c: Choice) -> bool:
            if max_cost is not None and (c.cost_weighted is None or c.cost_weighted > max_cost):
                return False
            if max_latency_ms is not None and (c.latency_ms is None or c.latency_ms > max_latency_ms):
                return False
            return True

        def cost(c: Choice) -> float:
            value = c.cost_usd if usd else c.cost_weighted
            return math.inf if value is None else value

        candidates = [c for c in pool if runs(c) and within(c)]
        planned = self.planned_choice(context_id, kind)
        if target == policy_target and runs(planned) and within(planned):
            primary = planned
            rest = [c for c in candidates if c.option != planned.option]
            fallback = planned.fallback
            reason = planned.reason + (" (within the request's caps)" if max_cost is not None or max_latency_ms is not None else "")
        else:
            if not candidates:
                if max_cost is not None or max_latency_ms is not None:
                    raise Unsatisfiable(
                        "max_cost" if max_cost is not None else "max_latency_ms", _caps_message(pool, max_cost, max_latency_ms)
                    )
                raise Unsatisfiable("context_id", "no option of the policy can run for this context")
            adequate = sorted((c for c in candidates if (c.estimate_lower or 0.0) >= target),
                              key=lambda c: (cost(c), -(c.estimate or 0.0), c.sleep_budget, c.test_budget))
            why = ("the published plan cannot run for this context" if target == policy_target and not runs(planned)
                   else "the published plan is outside the request's caps" if target == policy_target
                   else f"the request's target {target:g} replaces the policy's {policy_target:g}")
            if adequate:
                primary, rest, fallback = adequate[0], adequate[1:], False
                reason = (f"{why}; the cheapest option whose estimated lower bound {primary.estimate_lower:.3f} "
                          f"reaches {target:g}")
            else:
                ranked = sorted(candidates, key=lambda c: (-(c.estimate or 0.0), cost(c), c.sleep_budget, c.test_budget))
                primary, rest, fallback = ranked[0], ranked[1:], True
                reason = f"{why}; {FALLBACK_REASON} {target:g}: the most accurate option that can run"
        chain = [primary]
        if rest:
            chain.append(rest[0])
        raw = self._largest_raw(pool, runs, within)
        if raw is not None and all(raw.option != c.option for c in chain):
            chain.append(raw)
        chain[0] = Choice(**{**_fields(chain[0]), "fallback": fallback, "reason": reason})
        return Selection(choices=tuple(chain), target_accuracy=target, fallback=fallback, reason=reason)

    def choose(self, context_id: str, kind: str | None = None) -> Choice:
        """The option a query gets with no request overrides and every option available."""
        return self.select(context_id, kind).primary

    def _largest_raw(self, pool, runs, within) -> Choice | None:
        order = {name: i for i, name in enumerate(self.summary.get("test_budgets", ()))}
        raws = [c for c in pool if c.sleep_budget == RAW and runs(c) and within(c)]
        return max(raws, key=lambda c: order.get(c.test_budget, -1), default=None)

    # -- allocation ----------------------------------------------------------------------------
    def sleep_budget_for(self, context_id: str, expected_queries: float | None = None) -> str:
        """The c' a context gets. With ``expected_queries`` (the traffic now), the context's own
        allocation at that traffic (an average context's for a context the fit never saw);
        without, the allocation planned at publish time."""
        found = self.allocation.get(str(context_id))
        if found is not None and (expected_queries is None or math.isclose(expected_queries, found[1], rel_tol=1e-9)):
            return found[0]  # the traffic the plan was made for: the plan itself
        if expected_queries is None:
            expected_queries = float(self.summary.get("prior_queries", 0.0))
        steps = self.allocation_by_queries.get(str(context_id)) or self.allocation_default
        budget = steps[0][1] if steps else RAW
        for threshold, name in steps:
            if float(expected_queries) >= threshold:
                budget = name
        return budget

    # -- explaining ---------------------------------------------------------------------------
    def explain(self, context_id: str) -> str:
        s, d = self.settings, self.summary
        unit = "USD" if s.cost_metric == "usd" else "weighted tokens"
        lines = [
            f"Policy {self.version}: target accuracy {s.target_accuracy:g} over the expected query mix "
            f"(Wilson lower bound over {d['n_effective']:.0f} effective labeled queries, z={s.z:g}: the plan must "
            f"reach {d['required_accuracy']:.3f} expected accuracy)"
            + ("" if d["target_met"] else " -- NOT reachable: the plan is the most accurate one"),
            f"  plan: expected accuracy {d['expected_accuracy']:.3f} at {d['expected_cost']:.4g} {unit} per query; "
            f"price of accuracy {d['lambda']:.4g} {unit} per point (every choice minimises cost - price x accuracy)",
            f"  estimates shrink corpus -> kind (strength {d['m_kind']:.3g} answers) -> context "
            f"(strength {d['m_context']:.3g} answers)",
        ]
        known = str(context_id) in self.allocation
        budget = self.sleep_budget_for(context_id)
        queries = self.allocation.get(str(context_id), (budget, float(d.get("prior_queries", 0.0))))[1]
        traffic = d["traffic"]["source"]
        lines.append(
            f"Context {context_id}: expects {queries:.3g} queries per refresh ({traffic}); allocation: c' at "
            f"sleep budget {budget}" + ("" if known else " (not in the fitted data: the plan of an average context)")
        )
        for kind in [*self.kinds, ANY_KIND]:
            choice = self.choose(context_id, kind)
            label = "any kind" if kind == ANY_KIND else f"kind {kind!r}"
            lines.append(
                f"  {label}: {choice.scope} -> {choice.sleep_budget} + {choice.test_budget}: estimate "
                f"{_pct(choice.estimate)} (lower {_pct(choice.estimate_lower)}), cost {_num(choice.cost_weighted)} "
                f"weighted tokens (${_num(choice.cost_usd, '.6f')}), own record at it {choice.n and int(choice.n)} answers"
                f"{'; FALLBACK' if choice.fallback else ''}"
            )
            lam = float(d["lambda"])
            others = [c for c in self.pool.get(kind, ()) if c.option != choice.option][:3]
            for other in others:
                c_value = other.cost_usd if s.cost_metric == "usd" else other.cost_weighted
                lines.append(
                    f"      vs {other.sleep_budget} + {other.test_budget}: average-context estimate {_pct(other.estimate)}, "
                    f"cost {_num(c_value)} {unit}, score {_num((c_value or 0.0) - lam * (other.estimate or 0.0))}"
                )
        return "\n".join(lines)

    _rows: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)


class _PlannedRows:
    """The ``context`` rows, looked up by (context, kind) and turned into a Choice on demand."""

    _COLUMNS = ("scope", "scope_value", "kind", "sleep_budget", "test_budget", "n", "estimate", "estimate_lower",
                "cost_weighted", "cost_usd", "mean_latency_ms")

    def __init__(self, rows: pd.DataFrame, reason: str, fallback: bool):
        self._cols = {c: rows[c].tolist() for c in self._COLUMNS} if len(rows) else {c: [] for c in self._COLUMNS}
        self._index = {(str(c), str(k)): i for i, (c, k) in enumerate(zip(self._cols["scope_value"], self._cols["kind"]))}
        self._reason, self._fallback = reason, fallback

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: tuple[str, str]) -> Choice | None:
        i = self._index.get(key)
        if i is None:
            return None
        return _choice({c: values[i] for c, values in self._cols.items()}, reason=self._reason, fallback=self._fallback)


def _fields(choice: Choice) -> dict[str, Any]:
    return {name: getattr(choice, name) for name in Choice.__slots__}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _caps_message(pool: Iterable[Choice], max_cost: float | None, max_latency_ms: float | None) -> str:
    pool = list(pool)
    detail = []
    if max_cost is not None:
        cheapest = min((c.cost_weighted for c in pool if c.cost_weighted is not None), default=None)
        detail.append(f"max_cost {max_cost:g}" + (f" (cheapest option: {cheapest:.1f} weighted tokens)" if cheapest is not None else ""))
    if max_latency_ms is not None:
        fastest = min((c.latency_ms for c in pool if c.latency_ms is not None), default=None)
        detail.append(f"max_latency_ms {max_latency_ms:g}" + (f" (fastest option: {fastest:.1f} ms)" if fastest is not None else ""))
    return "no option is within " + " and ".join(detail)


def policy_rows(fit: _FitResult) -> pd.DataFrame:
    """The rows a fit stores (without the run id, which the publish adds)."""
    s, g, plan, p = fit.settings, fit.grid, fit.plan, fit.problem
    usd = s.cost_metric == "usd"
    w = s.test_token_weight
    latency = fit.latency_ms()
    q0 = fit.prior_queries()
    default = fit.default_plan(q0)
    acc = p.accuracy
    rows: list[dict[str, Any]] = []
    base = {c: None for c in ROW_COLUMNS}

    def add(**values: Any) -> None:
        rows.append({**base, "kind": "", "adequate": False, "chosen": False, **values})

    # Summary.
    sleep_full = float((g.sleep_usd if usd else g.sleep_tokens).sum())
    chosen_sleep = g.sleep_tokens[np.arange(len(g.contexts)), plan.sleep]
    per_budget = {name: int((plan.sleep == i).sum()) for i, name in enumerate(g.sleep)}
    summary = {
        "target_accuracy": s.target_accuracy,
        "required_accuracy": fit.required if math.isfinite(fit.required) else None,
        "n_effective": fit.n_effective,
        "target_met": fit.met,
        "lambda": plan.lam,
        "mu": {g.kinds[j]: float(m) for j, m in enumerate(plan.mu) if m},
        "expected_accuracy": plan.accuracy,
        "expected_cost": plan.cost,
        "kind_accuracy": {k: float(plan.kind_accuracy[j]) for j, k in enumerate(g.kinds)},
        "m_kind": fit.est.m_kind,
        "m_context": fit.est.m_context,
        "kinds": g.kinds,
        "corpus_mix": {k: float(g.corpus_mix[j]) for j, k in enumerate(g.kinds)},
        "sleep_budgets": g.sleep,
        "test_budgets": g.test,
        "prior_queries": q0,
        "traffic": {
            "source": "query log" if fit.traffic and sum(fit.traffic.values()) else "no traffic on record: the configured default",
            "queries_in_window": int(sum((fit.traffic or {}).values())),
            "contexts_with_traffic": int(sum(1 for v in (fit.traffic or {}).values() if v)),
        },
        "allocation": {
            "contexts_per_budget": per_budget,
            "sleep_calls": int((plan.sleep > 0).sum()),
            "sleep_calls_full_grid": int(len(g.contexts) * (len(g.sleep) - 1)),
            "sleep_tokens": float(chosen_sleep.sum()),
            "sleep_tokens_full_grid": float(g.sleep_tokens.sum()),
            "sleep_cost_full_grid": sleep_full,
        },
    }
    if summary["required_accuracy"] is None:
        summary["target_met"] = False
    add(scope="policy", scope_value=CORPUS, sleep_budget="", test_budget="", detail_json=json.dumps(summary, sort_keys=True))

    # Average-context options: per kind, and for the mix (corpus).
    corpus_counts = fit.est.corpus.set_index(["sleep_budget", "test_budget"])
    kind_counts = fit.est.kind.set_index(["kind", "sleep_budget", "test_budget"])

    def option_row(scope: str, kind: str, si: int, ti: int, est: float, lower: float, tokens: float, test_usd: float,
                   n: int, correct: int, chosen: bool) -> None:
        sleep_tokens, sleep_usd = float(g.mean_sleep_tokens[si]), float(g.mean_sleep_usd[si])
        q = max(q0, 1e-9)
        add(scope=scope, scope_value=CORPUS if scope == "corpus" else kind, kind=kind if scope == "kind" else "",
            sleep_budget=g.sleep[si], test_budget=g.test[ti], n=n, correct=correct,
            accuracy=correct / n if n else None, wilson_lower=float(wilson_lower_bounds(np.array([correct]), np.array([n]), s.z)[0]),
            estimate=est, estimate_lower=lower, mean_test_tokens=tokens, mean_test_cost_usd=test_usd,
            sleep_tokens_per_context=sleep_tokens, sleep_cost_usd_per_context=sleep_usd, expected_queries=q0,
            cost_weighted=sleep_tokens / q + w * tokens, cost_usd=sleep_usd / q + test_usd,
            mean_latency_ms=latency.get((g.sleep[si], g.test[ti])), adequate=bool(lower >= s.target_accuracy), chosen=chosen)

    for j, kind in enumerate(g.kinds):
        for si in range(len(g.sleep)):
            for ti in range(len(g.test)):
                key = (kind, g.sleep[si], g.test[ti])
                if key not in kind_counts.index:
                    continue
                r = kind_counts.loc[key]
                chosen = (default.option_sleep[0, j], default.option_test[0, j]) == (si, ti)
                option_row("kind", kind, si, ti, float(g.kind_estimate[j, si, ti]), float(g.kind_lower[j, si, ti]),
                           float(g.tokens[j, si, ti]), float(g.usd[j, si, ti]), int(r["n"]), int(r["correct"]), chosen)
    mix = g.corpus_mix
    cost_arr = p.test_cost
    d_s, d_t = _mix_choice(g.kind_estimate, cost_arr, mix, int(default.sleep[0]), plan.lam)
    for si in range(len(g.sleep)):
        for ti in range(len(g.test)):
            key = (g.sleep[si], g.test[ti])
            if key not in corpus_counts.index:
                continue
            r = corpus_counts.loc[key]
            est = float(np.nansum(mix * g.kind_estimate[:, si, ti]))
            option_row("corpus", "", si, ti, est, float(beta_lower(np.array([est]), np.array([r["n"] + 1.0]), s.z)[0]),
                       float(mix @ g.tokens[:, si, ti]), float(mix @ g.usd[:, si, ti]), int(r["n"]), int(r["correct"]),
                       (si, ti) == (d_s, d_t))

    # Per-context plans, and allocations (vectorized: 12.5k contexts at the 10M-answer scale). Each
    # allocation row also keeps where the context's best sleep budget changes with its expected
    # queries (at the same price of accuracy), so that a refresh re-plans it when traffic moves
    # without refitting anything.
    frames = [pd.DataFrame(rows)]
    m_ctx = fit.est.m_context
    C, J = len(g.contexts), len(g.kinds)
    contexts = np.array(g.contexts, dtype=object)
    sleep_names, test_names = np.array(g.sleep, dtype=object), np.array(g.test, dtype=object)
    c_idx = np.arange(C)
    queries = p.queries.astype(float)
    grid_q = [q for q in ALLOCATION_GRID if q > 0]
    by_queries = np.stack([fit.sleep_by_queries(q) for q in grid_q], axis=1).astype(int)  # [C, grid]
    raw_index = g.sleep.index(RAW) if RAW in g.sleep else -1
    steps_json = []
    for budgets in by_queries.tolist():
        steps: list[list[Any]] = [[0.0, RAW]]
        last = raw_index
        for q, b in zip(grid_q, budgets):
            if b != last:
                steps.append([q, g.sleep[b]])
                last = b
        steps_json.append(json.dumps({"by_expected_queries": steps}))
    frames.append(pd.DataFrame({
        "scope": "allocation", "scope_value": contexts, "kind": "", "sleep_budget": sleep_names[plan.sleep],
        "test_budget": "", "n": g.counts.sum(axis=1).astype(int), "expected_queries": queries,
        "sleep_tokens_per_context": g.sleep_tokens[c_idx, plan.sleep], "sleep_cost_usd_per_context": g.sleep_usd[c_idx, plan.sleep],
        "adequate": False, "chosen": True, "detail_json": steps_json,
    }))
    # One row per (context, kind): the kind's planned option; and per context for an unknown kind.
    mix_s, mix_t = _mix_choices(acc, cost_arr, p.mix, plan.sleep.astype(int), plan.lam)
    weights = np.concatenate([np.repeat(np.eye(J)[None], C, axis=0), p.mix[:, None, :]], axis=1)  # [C, J+1, J]
    o_sleep = np.concatenate([plan.option_sleep, mix_s[:, None]], axis=1)  # [C, J+1]
    o_test = np.concatenate([plan.option_test, mix_t[:, None]], axis=1)
    cc = np.repeat(c_idx[:, None], J + 1, axis=1)
    acc_at = np.nan_to_num(acc[cc[..., None], np.arange(J)[None, None, :], o_sleep[..., None], o_test[..., None]], nan=0.0)
    est = (weights * acc_at).sum(axis=2)
    tokens = (weights * g.tokens[np.arange(J)[None, None, :], o_sleep[..., None], o_test[..., None]]).sum(axis=2)
    test_usd = (weights * g.usd[np.arange(J)[None, None, :], o_sleep[..., None], o_test[..., None]]).sum(axis=2)
    n_own = g.own_n[cc, o_sleep, o_test]
    correct_own = g.own_correct[cc, o_sleep, o_test]
    lower = beta_lower(est.ravel(), (m_ctx + n_own).ravel(), s.z).reshape(est.shape)
    has_cprime = o_sleep > 0
    sleep_t = np.where(has_cprime, g.sleep_tokens[cc, o_sleep], 0.0)
    sleep_u = np.where(has_cprime, g.sleep_usd[cc, o_sleep], 0.0)
    q = np.repeat(queries[:, None], J + 1, axis=1)
    lat = np.array([[latency.get((g.sleep[si], g.test[ti]), np.nan) for ti in range(len(g.test))] for si in range(len(g.sleep))])
    with np.errstate(invalid="ignore", divide="ignore"):
        own_acc = np.where(n_own > 0, correct_own / np.maximum(n_own, 1), np.nan)
    frames.append(pd.DataFrame({
        "scope": "context", "scope_value": np.repeat(contexts, J + 1),
        "kind": np.tile(np.array([*g.kinds, ANY_KIND], dtype=object), C),
        "sleep_budget": sleep_names[o_sleep].ravel(), "test_budget": test_names[o_test].ravel(),
        "n": n_own.ravel().astype(int), "correct": correct_own.ravel().astype(int), "accuracy": own_acc.ravel(),
        "wilson_lower": wilson_lower_bounds(correct_own.ravel(), n_own.ravel(), s.z),
        "estimate": est.ravel(), "estimate_lower": lower.ravel(), "mean_test_tokens": tokens.ravel(),
        "mean_test_cost_usd": test_usd.ravel(), "sleep_tokens_per_context": sleep_t.ravel(),
        "sleep_cost_usd_per_context": sleep_u.ravel(), "expected_queries": q.ravel(),
        "cost_weighted": (sleep_t / q + w * tokens).ravel(), "cost_usd": (sleep_u / q + test_usd).ravel(),
        "mean_latency_ms": lat[o_sleep, o_test].ravel(), "adequate": (lower >= s.target_accuracy).ravel(), "chosen": True,
    }))
    rows = []  # the allocation_default rows, through add()
    for q in ALLOCATION_GRID:
        budget = g.sleep[int(fit.default_plan(q).sleep[0])] if q > 0 else RAW
        add(scope="allocation_default", scope_value=f"{q:g}", sleep_budget=budget, test_budget="", expected_queries=q,
            sleep_tokens_per_context=float(g.mean_sleep_tokens[g.sleep.index(budget)]),
            sleep_cost_usd_per_context=float(g.mean_sleep_usd[g.sleep.index(budget)]), chosen=True)

    frames.append(pd.DataFrame(rows))
    frame = pd.concat([f for f in frames if len(f)], ignore_index=True)
    for column in ROW_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame[list(ROW_COLUMNS)]
    frame["kind"] = frame["kind"].fillna("")
    frame.insert(0, "settings_json", s.to_json())
    frame.insert(0, "policy_version", fit.version)
    return frame
