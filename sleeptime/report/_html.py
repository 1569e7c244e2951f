"""The report: one self-contained HTML page (inline SVG plots, inline CSS, no scripts but a
small render check), readable offline, built from the published warehouse. This module computes
the numbers and draws the plots; the markup is in templates/report.html.j2 and its neighbours."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import UndefinedError  # noqa: E402
from markupsafe import Markup  # noqa: E402

from sleeptime.analysis.cost import amortization_curve  # noqa: E402
from sleeptime.analysis.curves import NONE, accuracy_vs_tokens, mark_frontier, order_sleep_budgets, order_test_budgets  # noqa: E402
from sleeptime.analysis.frames import AnalysisFrames, load_frames  # noqa: E402
from sleeptime.analysis.headline import headline_numbers  # noqa: E402
from sleeptime.config import RunConfig  # noqa: E402
from sleeptime.domain import Usage  # noqa: E402
from sleeptime.model._gateway import cache_savings  # noqa: E402
from sleeptime.htmltable import html_table, render  # noqa: E402
from sleeptime.policy import HeldOutReport, HeldOutSplit, sweep_targets  # noqa: E402
from sleeptime.policy.store import load_published_policy  # noqa: E402
from sleeptime.service.report_section import query_log_numbers, query_log_section  # noqa: E402
from sleeptime.storage.warehouse import Warehouse  # noqa: E402

COLORS = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _log_scale(ax, which: str) -> None:
    """A log axis with plain-text tick labels: the default labels are mathtext ("$10^{2}$"), whose
    parsing and glyph layout took about a third of the report's drawing time."""
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(ticker.LogFormatter(10))
    axis.set_minor_formatter(ticker.LogFormatter(10, labelOnlyBase=False))


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


# --- plots -------------------------------------------------------------------------------------


def plot_accuracy_vs_tokens(curve: pd.DataFrame, passk: list[dict[str, Any]], sleep_order: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    marked = mark_frontier(curve)
    for i, budget in enumerate(sleep_order):
        part = marked[marked["sleep_budget"] == budget].sort_values("mean_test_tokens")
        label = "test-time only" if budget == NONE else f"sleep: {budget}"
        ax.plot(part["mean_test_tokens"], part["accuracy"], "o-", color=COLORS[i % len(COLORS)], label=label)
    front = marked[marked["on_frontier"]].sort_values("mean_test_tokens")
    ax.plot(front["mean_test_tokens"], front["accuracy"], "k--", lw=1, label="Pareto frontier")
    ax.scatter(front["mean_test_tokens"], front["accuracy"], s=120, facecolors="none", edgecolors="k")
    pk = [p for p in passk if p.get("k", 1) > 1]
    if pk:
        ax.scatter([p["pass_at_k_tokens"] for p in pk], [p["pass_at_k"] for p in pk], marker="x", color="#ff7f0e",
                   label="pass@k (raw context, oracle)")
    _log_scale(ax, "x")
    ax.set_xlabel("mean test-time completion tokens per query (log)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)


def plot_sleep_scaling(curve: pd.DataFrame, sleep_tokens: dict[str, float], test_order: list[str], fixed: str | None) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, test_budget in enumerate(test_order):
        part = curve[curve["test_budget"] == test_budget].copy()
        part["x"] = part["sleep_budget"].map(sleep_tokens).fillna(0.0)
        part = part.sort_values("x")
        width = 2.5 if test_budget == fixed else 1.2
        ax.plot(part["x"], part["accuracy"], "o-", lw=width, color=COLORS[(i + 1) % len(COLORS)], label=f"test: {test_budget}")
    ax.set_xlabel("sleep-time completion tokens per context (all k samples)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)


def plot_amortization(curve: pd.DataFrame, highlight: list[tuple[str, str]]) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, (sleep_budget, test_budget) in enumerate(highlight):
        part = curve[(curve["sleep_budget"] == sleep_budget) & (curve["test_budget"] == test_budget)]
        style = "--" if sleep_budget == NONE else "-"
        ax.plot(part["queries_per_context"], part["weighted_tokens_per_query"], style, marker="o", ms=3,
                color=COLORS[i % len(COLORS)], label=f"{sleep_budget} / {test_budget}")
    ax.set_xlabel("queries per context")
    ax.set_ylabel("cost per query (sleep + 10 x test tokens) / queries")
    _log_scale(ax, "y")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def plot_predictability(table: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    quantiles = [row["quantile"] for row in table]
    ax.bar(quantiles, [row["gain"] for row in table], color="#1f77b4", label="gain of sleep time")
    ax.plot(quantiles, [row["accuracy_none"] for row in table], "s--", color="#7f7f7f", label="accuracy, raw context")
    ax.plot(quantiles, [row["accuracy_sleep"] for row in table], "o-", color="#d62728", label="accuracy, with c'")
    ax.set_xlabel("predictability quantile (1 = least predictable)")
    ax.set_ylabel("accuracy / gain")
    ax.set_xticks(quantiles)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig)


def _fixed_pairs_figure(fixed: pd.DataFrame):
    """A held-out scorecard plot with every fixed pair drawn: (fig, ax) for the policy to join."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    sleep = fixed[fixed["sleep_budget"] != NONE]
    raw = fixed[fixed["sleep_budget"] == NONE]
    ax.scatter(sleep["cost_weighted"], sleep["accuracy"], color="#1f77b4", label="fixed (sleep budget, test budget)")
    ax.scatter(raw["cost_weighted"], raw["accuracy"], color="#7f7f7f", marker="s", label="fixed, test-time only")
    _log_scale(ax, "x")
    ax.set_xlabel("cost per query on held-out queries (weighted tokens, log)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_heldout(report: HeldOutReport) -> str:
    fig, ax = _fixed_pairs_figure(report.fixed)
    ax.scatter([report.policy_cost_weighted], [report.policy_accuracy], color="#d62728", marker="*", s=250,
               label="selection policy", zorder=5)
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)


def plot_frontier(per_target: pd.DataFrame, fixed: pd.DataFrame) -> str:
    """The policy as its target sweeps (a line), every fixed pair as a point, held-out queries."""
    fig, ax = _fixed_pairs_figure(fixed)
    ordered = per_target.sort_values("target")
    ax.plot(ordered["policy_cost_weighted"], ordered["policy_accuracy"], "*-", color="#d62728", ms=10,
            label="selection policy, target swept", zorder=5)
    for _, r in ordered.iterrows():
        ax.annotate(f"{r['target']:g}", (r["policy_cost_weighted"], r["policy_accuracy"]), textcoords="offset points",
                    xytext=(6, -10), fontsize=7, color="#d62728")
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)


def published_policy_section(con: duckdb.DuckDBPyConnection) -> tuple[str, dict[str, Any]]:
    """The policy the service serves (its stored summary) and the sleep allocation it plans."""
    policy = load_published_policy(con)
    if policy is None:
        return render("published_policy.html.j2", version=None, summary=None, saved=None), {}
    d = policy.summary
    alloc = d["allocation"]
    saved = 1 - alloc["sleep_tokens"] / alloc["sleep_tokens_full_grid"] if alloc["sleep_tokens_full_grid"] else 0.0
    numbers = {"version": policy.version, "target_accuracy": d["target_accuracy"], "target_met": d["target_met"],
               "required_accuracy": d["required_accuracy"], "expected_accuracy": d["expected_accuracy"],
               "expected_cost": d["expected_cost"], "kind_accuracy": d["kind_accuracy"], "traffic": d["traffic"],
               "allocation": alloc, "allocation_sleep_tokens_saved": saved}
    return render("published_policy.html.j2", version=policy.version, summary=d, saved=saved), numbers


def plot_real_model(cells: list[dict[str, Any]]) -> str:
    """Accuracy (95 % interval) against mean test-time tokens per measured cell: one colour per
    test model, open markers on the raw context, filled with c'."""
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    models = sorted({c["test_model"] for c in cells})
    for i, model in enumerate(models):
        for c in (c for c in cells if c["test_model"] == model):
            raw = c["sleep"] == NONE
            err = [[c["accuracy"] - c["ci_low"]], [c["ci_high"] - c["accuracy"]]]
            ax.errorbar(c["mean_test_tokens"], c["accuracy"], yerr=err, fmt="o", ms=6, capsize=2,
                        color=COLORS[i % len(COLORS)], mfc="white" if raw else COLORS[i % len(COLORS)])
            ax.annotate(f"{'raw' if raw else c['sleep']} {c['test']}", (c["mean_test_tokens"], c["accuracy"]),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.plot([], [], "o", color=COLORS[i % len(COLORS)], label=model)
    ax.set_xlabel("mean test-time completion tokens")
    ax.set_ylabel("accuracy (95 % interval)")
    _log_scale(ax, "x")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)


def real_model_sections(config: RunConfig) -> tuple[str, list[dict[str, Any]]]:
    """One section per real-model summary bench/real_llm.py left in the output (see
    RunConfig.real_model_results); a file that does not read as one is named, not fatal."""
    parts, numbers = [], []
    for i, path in enumerate(config.real_model_results):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            cells = result["summary"]["cells"]
            table = pd.DataFrame(cells)[["test_model", "cprime", "test", "n", "accuracy", "ci_low", "ci_high",
                                          "mean_test_tokens", "sleep_tokens_per_context", "amortized_cost_10q"]]
            svg = plot_real_model(cells)
            # Rendered here too: a summary missing a key the template reads is named like an unreadable one.
            section = render("real_model.html.j2", result=result, path=path.name, error=None,
                             plot_id=f"plot-real-model-{i}", svg=Markup(svg), table=_table(table))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UndefinedError) as exc:
            parts.append(render("real_model.html.j2", result=None, path=path.name, error=f"{type(exc).__name__}: {exc}"))
            continue
        parts.append(section)
        numbers.append({"file": path.name, **{k: v for k, v in result.items() if k != "summary"}, **result["summary"]})
    return "\n".join(parts), numbers


def plot_runs(runs: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    labels = [str(i + 1) for i in range(len(runs))]
    colors = ["#2ca02c" if s == "published" else "#d62728" for s in runs["status"]]
    ax.bar(labels, runs["model_calls"], color=colors)
    ax.set_xlabel("run (oldest first; red = refused by the quality gate)")
    ax.set_ylabel("model calls")
    ax.grid(alpha=0.3, axis="y")
    return _svg(fig)


# --- page --------------------------------------------------------------------------------------


def _table(frame: pd.DataFrame, floats: int = 3) -> Markup:
    """A frame as the page's table, marked safe so the page template embeds it as HTML."""
    if frame is None or frame.empty:
        return Markup(html_table([], []))
    return Markup(html_table(frame.to_dict("records"), list(frame.columns), floats))


def prompt_cache_frame(con: duckdb.DuckDBPyConnection, config: RunConfig) -> pd.DataFrame:
    """Per stage and model: prompt tokens, the share the provider's prompt cache served, what was
    spent and what caching saved at the model's prices (models the configuration no longer has
    are shown without a saving)."""
    frame = con.execute(
        """SELECT 'sleep' AS stage, model, sum(prompt_tokens) AS prompt_tokens,
                  sum(coalesce(cached_prompt_tokens, 0)) AS cached_prompt_tokens,
                  sum(coalesce(cache_write_tokens, 0)) AS cache_write_tokens, sum(cost_usd) AS cost_usd
           FROM variants_current GROUP BY ALL
           UNION ALL
           SELECT 'test', test_model, sum(prompt_tokens), sum(coalesce(cached_prompt_tokens, 0)),
                  sum(coalesce(cache_write_tokens, 0)), sum(cost_usd)
           FROM answers_current GROUP BY ALL ORDER BY 1, 2""").df()
    if frame.empty:
        return frame
    saved = []
    for row in frame.itertuples():
        spec = config.models.get(row.model)
        usage = Usage(prompt_tokens=int(row.prompt_tokens or 0), completion_tokens=0,
                      cached_prompt_tokens=int(row.cached_prompt_tokens), cache_write_tokens=int(row.cache_write_tokens))
        saved.append(cache_savings(spec, usage) * spec.price_factor(row.stage) if spec is not None else float("nan"))
    frame["cached_share"] = frame["cached_prompt_tokens"] / frame["prompt_tokens"].where(frame["prompt_tokens"] > 0)
    frame["cache_savings_usd"] = saved
    return frame


def logprob_scores_for_report(config: RunConfig, frames: AnalysisFrames) -> tuple[pd.DataFrame | None, str | None]:
    """The model's log P(q | c) per query when `sleeptime predictability --logprob-model` wrote them
    and they cover at least half of the current queries; otherwise (None, None): the text proxy."""
    path = config.logprob_scores_path
    if not path.is_file():
        return None, None
    scores = pd.read_parquet(path)
    scored = scores.dropna(subset=["score"])
    current = set(frames.queries["query_id"])
    if not current or len(set(scored["query_id"]) & current) < len(current) / 2:
        return None, None
    model = str(scores["model"].iloc[0]) if "model" in scores and len(scores) else "a model"
    return scored[["query_id", "context_id", "score"]], f"log P(q | c) under {model} (token log-probabilities)"


def build_report(con: duckdb.DuckDBPyConnection, config: RunConfig, frames: AnalysisFrames | None = None) -> tuple[str, dict[str, Any]]:
    """(html, numbers): the page and the numbers it quotes."""
    frames = frames or load_frames(con)
    if frames.answers.empty:
        raise ValueError("the warehouse has no graded answers yet: run the evaluation (`sleeptime run`) first")
    weight = config.policy.test_token_weight
    scores, label = logprob_scores_for_report(config, frames)
    head = headline_numbers(frames, t=weight, n_queries=int(config.policy.expected_queries_per_context),
                            scores=scores, score_label=label)
    curve = accuracy_vs_tokens(frames.answers, frames.sleep)
    sleep_order = order_sleep_budgets(frames.answers, frames.sleep)
    test_order = order_test_budgets(frames.answers)
    sleep_tokens = {row["sleep_budget"]: row["mean_sleep_tokens_per_context"] for row in head["curve"]}
    settings = config.policy_settings
    split = HeldOutSplit.prepare(frames.answers, frames.sleep, settings, config.policy.holdout_fraction)
    heldout = split.check(settings)
    targets = tuple(sorted({0.5, 0.7, 0.8, 0.9, 0.95, 0.99, config.policy.target_accuracy}))
    sweep, sweep_fixed = sweep_targets(split, settings, targets)
    published_html, published_numbers = published_policy_section(con)
    runs = con.execute("SELECT * FROM v_run_history").df()
    service_html = query_log_section(con, t=weight)
    caching = prompt_cache_frame(con, config)
    real_html, real_numbers = real_model_sections(config)

    cost = head["amortized_cost_reduction"]
    highlight = []
    if cost.get("baseline") and cost.get("sleep"):
        highlight = [(cost["baseline"]["sleep_budget"], cost["baseline"]["test_budget"]),
                     (cost["sleep"]["sleep_budget"], cost["sleep"]["test_budget"])]
    small = head["accuracy_gain_from_sleep"].get("test_budget")
    if small:
        highlight += [(s, small) for s in sleep_order if (s, small) not in highlight]
    amort = amortization_curve(frames.answers, frames.sleep, pairs=highlight, t=weight)

    numbers = {
        "headline": head,
        "heldout": {
            "policy_accuracy": heldout.policy_accuracy,
            "policy_cost_weighted": heldout.policy_cost_weighted,
            "policy_cost_usd": heldout.policy_cost_usd,
            "fallback_rate": heldout.fallback_rate,
            "n_test_queries": heldout.n_test_queries,
            "best_fixed": heldout.best_fixed,
            "choices": {f"{k}": int(v) for k, v in heldout.choices.items()},
        },
        "frontier": sweep.drop(columns=["kind_accuracy"]).to_dict("records"),
        "published_policy": published_numbers,
        "service": query_log_numbers(con, t=weight),
        "prompt_cache": caching.to_dict("records"),
        "real_models": real_numbers,
    }
    fixed = heldout.fixed.copy()
    policy_row = pd.DataFrame([{"sleep_budget": "POLICY", "test_budget": "per query", "accuracy": heldout.policy_accuracy,
                                "cost_weighted": heldout.policy_cost_weighted, "cost_usd": heldout.policy_cost_usd}])
    scorecard = pd.concat([policy_row, fixed[["sleep_budget", "test_budget", "accuracy", "cost_weighted", "cost_usd"]]],
                          ignore_index=True)
    run_cols = ["run_id", "status", "contexts_new", "contexts_changed", "contexts_unchanged", "contexts_removed",
                "variants_written", "answers_written", "model_calls", "completion_tokens", "failures", "seconds"]
    # matplotlib's SVG is our own output, not data: embedded as markup.
    svgs = {name: Markup(svg) for name, svg in {
        "accuracy_tokens": plot_accuracy_vs_tokens(curve, head["pass_at_k"]["comparison"], sleep_order),
        "sleep_scaling": plot_sleep_scaling(curve, sleep_tokens, test_order, small),
        "amortization": plot_amortization(amort, highlight),
        "predictability": plot_predictability(head["predictability"].get("table", [])),
        "heldout": plot_heldout(heldout),
        "frontier": plot_frontier(sweep, sweep_fixed),
        "runs": plot_runs(runs) if len(runs) else "<svg></svg>",
    }.items()}
    page = render(
        "report.html.j2",
        head=head, heldout=heldout, heldout_choices=numbers["heldout"]["choices"], weight=weight, small=small,
        policy=config.policy, sweep=sweep.to_dict("records"), svgs=svgs,
        caching_saved=float(caching["cache_savings_usd"].sum()) if len(caching) else 0.0,
        caching_share=(float(caching["cached_prompt_tokens"].sum() / caching["prompt_tokens"].sum())
                       if len(caching) and caching["prompt_tokens"].sum() else 0.0),
        tables={"curve": _table(curve), "scorecard": _table(scorecard), "caching": _table(caching, floats=4),
                "runs": _table(runs[[c for c in run_cols if c in runs.columns]], floats=1)},
        published=Markup(published_html), service=Markup(service_html), real_model=Markup(real_html),
        numbers_json=json.dumps(numbers, indent=1, default=str),
        built=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return page, numbers


def write_report(warehouse: Warehouse, config: RunConfig, path: Path) -> Path:
    with warehouse.read() as con:
        page, numbers = build_report(con, config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(numbers, indent=1, default=str), encoding="utf-8")
    return path
