"""The report: one self-contained HTML page (inline SVG plots, inline CSS, no scripts but a
small render check), readable offline, built from the published warehouse."""

from __future__ import annotations

import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sleeptime.analysis.cost import amortization_curve  # noqa: E402
from sleeptime.analysis.curves import NONE, accuracy_vs_tokens, mark_frontier, order_sleep_budgets, order_test_budgets  # noqa: E402
from sleeptime.analysis.frames import AnalysisFrames, load_frames  # noqa: E402
from sleeptime.analysis.headline import headline_numbers  # noqa: E402
from sleeptime.config import RunConfig  # noqa: E402
from sleeptime.htmltable import html_table  # noqa: E402
from sleeptime.policy import HeldOutReport, frontier, held_out_check  # noqa: E402
from sleeptime.policy.store import load_published_policy, settings_from  # noqa: E402
from sleeptime.service.report_section import query_log_numbers, query_log_section  # noqa: E402
from sleeptime.storage.warehouse import Warehouse  # noqa: E402

COLORS = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(plot_id: str, title: str, svg: str, caption: str) -> str:
    return (
        f'<figure class="plot" id="{plot_id}"><h3>{html.escape(title)}</h3>{svg}'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(frame: pd.DataFrame, floats: int = 3) -> str:
    if frame is None or frame.empty:
        return html_table([], [])
    return html_table(frame.to_dict("records"), list(frame.columns), floats)


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
    ax.set_xscale("log")
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
    ax.set_yscale("log")
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
    ax.set_xscale("log")
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
        return "<h2>Published policy</h2><p>No policy is published yet.</p>", {}
    d = policy.summary
    alloc = d["allocation"]
    saved = 1 - alloc["sleep_tokens"] / alloc["sleep_tokens_full_grid"] if alloc["sleep_tokens_full_grid"] else 0.0
    numbers = {"version": policy.version, "target_accuracy": d["target_accuracy"], "target_met": d["target_met"],
               "required_accuracy": d["required_accuracy"], "expected_accuracy": d["expected_accuracy"],
               "expected_cost": d["expected_cost"], "kind_accuracy": d["kind_accuracy"], "traffic": d["traffic"],
               "allocation": alloc, "allocation_sleep_tokens_saved": saved}
    kinds = ", ".join(f"{html.escape(k)} {v:.1%}" for k, v in sorted(d["kind_accuracy"].items()))
    per_budget = ", ".join(f"{html.escape(k)}: {v}" for k, v in alloc["contexts_per_budget"].items() if v)
    body = f"""<h2>Published policy and sleep allocation</h2>
<p>Policy <code>{html.escape(policy.version)}</code> (what the query service answers with): target
{d['target_accuracy']:.0%} over the expected query mix, which needs {_fmt(d['required_accuracy'], '{:.1%}')} expected accuracy
at its confidence; planned {d['expected_accuracy']:.1%} at {d['expected_cost']:.1f} weighted tokens per query
{'' if d['target_met'] else '(<b>target not reachable</b>: the most accurate plan)'}. Expected accuracy per kind: {kinds}.
Traffic: {html.escape(d['traffic']['source'])} ({d['traffic']['queries_in_window']} queries in the window).</p>
<p>Sleep allocation of this policy: contexts per sleep budget {per_budget}; {alloc['sleep_calls']} c' of
{alloc['sleep_calls_full_grid']} for every budget everywhere, {alloc['sleep_tokens']:,.0f} of
{alloc['sleep_tokens_full_grid']:,.0f} sleep tokens ({saved:.0%} saved). A refresh uses it under
<code>policy.sleep_allocation: traffic</code> (<code>sleeptime plan</code> shows the plan at the traffic now).</p>"""
    return body, numbers


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

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:12px;margin:1.5em 0}
.card{border:1px solid #ddd;border-radius:8px;padding:12px;background:#fafafa}
.card .v{font-size:1.6em;font-weight:600}.card .k{color:#555;font-size:.9em}
figure.plot{margin:1.5em 0;border-top:1px solid #eee;padding-top:.5em}figure.plot svg{max-width:100%;height:auto}
figcaption{color:#555;font-size:.9em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f0f0f0}
"""

# Headless browsers and people both read this: it reports whether every plot has a drawn area.
RENDER_CHECK = """
<pre id="render-check"></pre>
<script>
(function(){var out=[];document.querySelectorAll('figure.plot').forEach(function(f){
var s=f.querySelector('svg');var r=s?s.getBoundingClientRect():{width:0,height:0};
var drawn=s?Array.prototype.filter.call(s.querySelectorAll('path,use,rect'),function(e){
var b=e.getBoundingClientRect();return b.width>0||b.height>0;}).length:0;
out.push(f.id+' '+Math.round(r.width)+'x'+Math.round(r.height)+' drawn='+drawn);});
document.getElementById('render-check').textContent=out.join('\\n');})();
</script>
"""


def _card(value: str, label: str) -> str:
    return f'<div class="card"><div class="v">{html.escape(value)}</div><div class="k">{html.escape(label)}</div></div>'


def _fmt(value: Any, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


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
    settings = settings_from(config.policy, tuple(b.name for b in config.test_budgets),
                             tuple(b.name for b in config.sleep_budgets))
    heldout = held_out_check(frames.answers, frames.sleep, settings, config.policy.holdout_fraction)
    targets = tuple(sorted({0.5, 0.7, 0.8, 0.9, 0.95, 0.99, config.policy.target_accuracy}))
    sweep, sweep_fixed = frontier(frames.answers, frames.sleep, settings, targets, config.policy.holdout_fraction)
    published_html, published_numbers = published_policy_section(con)
    runs = con.execute("SELECT * FROM v_run_history").df()
    service_html = query_log_section(con, t=weight)

    cost = head["amortized_cost_reduction"]
    highlight = []
    if cost.get("baseline") and cost.get("sleep"):
        highlight = [(cost["baseline"]["sleep_budget"], cost["baseline"]["test_budget"]),
                     (cost["sleep"]["sleep_budget"], cost["sleep"]["test_budget"])]
    small = head["accuracy_gain_from_sleep"].get("test_budget")
    if small:
        highlight += [(s, small) for s in sleep_order if (s, small) not in highlight]
    amort = amortization_curve(frames.answers, frames.sleep, pairs=highlight, t=weight)

    token = head["token_reduction_at_equal_accuracy"]
    gain = head["accuracy_gain_from_sleep"]
    pred = head["predictability"]
    best = heldout.best_fixed
    numbers = {
        "headline": head,
        "heldout": {
            "policy_accuracy": heldout.policy_accuracy,
            "policy_cost_weighted": heldout.policy_cost_weighted,
            "policy_cost_usd": heldout.policy_cost_usd,
            "fallback_rate": heldout.fallback_rate,
            "n_test_queries": heldout.n_test_queries,
            "best_fixed": best,
            "choices": {f"{k}": int(v) for k, v in heldout.choices.items()},
        },
        "frontier": sweep.drop(columns=["kind_accuracy"]).to_dict("records"),
        "published_policy": published_numbers,
        "service": query_log_numbers(con, t=weight),
    }
    cards = "".join([
        _card(f"{_fmt(token.get('ratio'))}x", f"fewer test-time tokens at equal accuracy ({_fmt(token.get('accuracy_level'), '{:.1%}')}: "
              f"{token.get('baseline_test_budget')} raw vs {token.get('sleep_budget')}/{token.get('sleep_test_budget')}); "
              f"best at any level {_fmt(token.get('best_ratio_any_level'))}x"),
        _card(f"+{_fmt(gain.get('gain_over_none'), '{:.1%}')}", f"accuracy from sleep time at {gain.get('test_budget')} "
              f"({_fmt(gain.get('accuracy_none'), '{:.1%}')} -> {_fmt(gain.get('best_accuracy'), '{:.1%}')}); "
              f"smallest -> largest sleep budget +{_fmt(gain.get('gain_smallest_to_largest'), '{:.1%}')}"),
        _card(f"{_fmt(cost.get('ratio'))}x", f"lower amortized cost per query at {cost.get('queries_per_context')} queries per context (t = {weight:g})"),
        _card(f"{_fmt(pred.get('trend'), '{:+.2f}')}", "gain of sleep time, most minus least predictable quantile "
              f"(per quantile: {', '.join(_fmt(g) for g in pred.get('gain_per_quantile', []))})"),
        _card(f"{heldout.policy_accuracy:.1%} at {heldout.policy_cost_weighted:.0f}",
              f"selection policy on {heldout.n_test_queries} held-out queries (accuracy at weighted tokens per query); "
              f"best fixed pair {best.get('sleep_budget')}/{best.get('test_budget')}: "
              f"{_fmt(best.get('accuracy'), '{:.1%}')} at {_fmt(best.get('cost_weighted'), '{:.0f}')}"),
    ])
    fixed = heldout.fixed.copy()
    policy_row = pd.DataFrame([{"sleep_budget": "POLICY", "test_budget": "per query", "accuracy": heldout.policy_accuracy,
                                "cost_weighted": heldout.policy_cost_weighted, "cost_usd": heldout.policy_cost_usd}])
    scorecard = pd.concat([policy_row, fixed[["sleep_budget", "test_budget", "accuracy", "cost_weighted", "cost_usd"]]],
                          ignore_index=True)
    run_cols = ["run_id", "status", "contexts_new", "contexts_changed", "contexts_unchanged", "contexts_removed",
                "variants_written", "answers_written", "model_calls", "completion_tokens", "failures", "seconds"]
    plots = "".join([
        _figure("plot-accuracy-tokens", "Accuracy against test-time tokens",
                plot_accuracy_vs_tokens(curve, head["pass_at_k"]["comparison"], sleep_order),
                "One curve per sleep budget across the test budgets; circled points are the Pareto frontier; "
                "crosses are pass@k on the raw context (tokens summed over the k samples)."),
        _figure("plot-sleep-scaling", "Sleep-time scaling",
                plot_sleep_scaling(curve, sleep_tokens, test_order, small),
                f"Accuracy at each test budget against sleep-time tokens per context (bold: {small})."),
        _figure("plot-amortization", "Amortized cost per query",
                plot_amortization(amort, highlight),
                f"(sleep tokens + {weight:g} x test tokens) / queries, as the number of queries per context grows; "
                "dashed: test-time only."),
        _figure("plot-predictability", "Predictability and the gain of sleep time",
                plot_predictability(pred.get("table", [])),
                f"Queries split into quantiles of a predictability score ({pred.get('score', '')}); gain at "
                f"{pred.get('test_budget')} with sleep budget {pred.get('sleep_budget')}."),
        _figure("plot-heldout", "Selection policy on held-out queries", plot_heldout(heldout),
                f"Fitted on {1 - config.policy.holdout_fraction:.0%} of the queries, scored on the rest; target accuracy "
                f"{config.policy.target_accuracy:.0%} over the query mix (Wilson lower bound, z = {config.policy.z:g})."),
        _figure("plot-frontier", "Policy frontier: the target swept against every fixed choice",
                plot_frontier(sweep, sweep_fixed),
                "Held-out accuracy and cost of the policy fitted at each target (labels), beside every fixed pair "
                "scored on the same held-out queries. Met at a target when the policy reaches it no dearer than the "
                "cheapest fixed pair that does: " + ", ".join(
                    f"{r['target']:g} {'yes' if r['met'] else 'no'}" for r in sweep.to_dict("records")) + "."),
        _figure("plot-runs", "Run history", plot_runs(runs) if len(runs) else "<svg></svg>",
                "Model calls per run: an unchanged corpus costs nothing."),
    ])
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>sleeptime report</title><style>{CSS}</style></head><body>
<h1>Sleep-time compute report</h1>
<p class="sub">{head['data']['contexts']} contexts, {head['data']['queries']} labeled queries, {head['data']['answers']} graded answers;
sleep budgets {', '.join(head['data']['sleep_budgets'])}; test budgets {', '.join(head['data']['test_budgets'])}. Built {built}.</p>
<div class="cards">{cards}</div>
{plots}
<h2>Accuracy and tokens per budget pair</h2>{_table(curve)}
<h2>Selection policy: held-out scorecard</h2>
<p>Policy choices on held-out queries: {html.escape(', '.join(f'{k}: {v}' for k, v in numbers['heldout']['choices'].items()))};
fallback rate {heldout.fallback_rate:.1%}.</p>{_table(scorecard)}
{published_html}
{service_html}
<h2>Run history</h2>{_table(runs[[c for c in run_cols if c in runs.columns]], floats=1)}
<h2>Numbers (JSON)</h2><details><summary>every figure above, as computed</summary><pre>{html.escape(json.dumps(numbers, indent=1, default=str))}</pre></details>
{RENDER_CHECK}
</body></html>"""
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
