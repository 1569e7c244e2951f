"""Crash recovery with a real SIGKILL, and a reader process querying while a refresh publishes."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq

from sleeptime.dataset import generate_corpus, load_corpus, write_project_jsonl
from tests.flows.conftest import Pipeline, kill_session, spawn_run

ROOT = Path(__file__).resolve().parents[2]


def _keys(p: Pipeline) -> dict[str, set]:
    with p.warehouse().read() as con:
        return {
            "contexts": set(con.execute("SELECT context_id, content_hash, deleted FROM contexts").fetchall()),
            "queries": set(con.execute("SELECT query_id, context_hash FROM queries").fetchall()),
            "variants": set(con.execute("SELECT variant_id, text, completion_tokens FROM variants").fetchall()),
            "answers": set(con.execute("SELECT answer_id, raw_reply, correct FROM answers").fetchall()),
        }


def _lake_rows(p: Pipeline) -> dict[str, int]:
    counts = p.lake_counts()
    counts.pop("runs")
    return counts


def test_sigkill_midway_then_rerun_gives_exactly_the_rows_of_a_clean_run(pipeline, prefect_api_url, tmp_path):
    crashed = Pipeline(tmp_path / "crashed", contexts=12, seed=8)
    crashed.write_config(shard_size=1)
    proc = spawn_run(crashed, tmp_path, api_url=prefect_api_url)
    from sleeptime.storage import Lake

    staged = Lake(crashed.out / "lake", read_only=True)

    def staged_answers() -> int:
        try:
            return staged.read_staged("answers").num_rows
        except Exception:  # the run has not created the lake yet
            return 0

    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if staged_answers() >= 2:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_session(proc.pid)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (crashed.out / "warehouse" / "sleeptime.duckdb").exists()  # nothing was published
    assert staged.read_staged("answers").num_rows, "finished shards wait in staging"
    Lake.close_all()

    resumed = crashed.run()
    assert resumed.status == "published"
    assert resumed.answers_written < _lake_rows(crashed)["answers"]  # staged work was reused, not redone

    clean = Pipeline(tmp_path / "clean", contexts=12, seed=8)
    clean.write_config(shard_size=1)
    clean.run()
    assert _keys(crashed) == _keys(clean)
    assert _lake_rows(crashed) == _lake_rows(clean)  # none lost, none duplicated, even in the lake
    for path in (crashed.out / "lake").rglob("*.parquet"):
        pq.read_table(path)  # every visible file is whole
    assert not [p for p in (crashed.out / "lake").rglob("*") if p.name.startswith(".") and p.is_file()]


READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from sleeptime.storage.warehouse import Warehouse
    wh, stop, out = Warehouse(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    seen, errors, reads = set(), [], 0
    deadline = time.monotonic() + 300
    while not stop.exists() and time.monotonic() < deadline:
        try:
            with wh.read() as con:
                n = con.execute("SELECT count(*) FROM variants_current").fetchone()[0]
                m = con.execute("SELECT count(*) FROM contexts_current").fetchone()[0]
            seen.add((n, m)); reads += 1
        except Exception as exc:
            errors.append(repr(exc))
        time.sleep(0.02)
    out.write_text(json.dumps({"seen": sorted(seen), "errors": errors, "reads": reads}))
    """
)


def test_a_reader_process_queries_while_a_refresh_publishes(pipeline, tmp_path):
    import json

    pipeline.run()
    stop, out = tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(pipeline.out / "warehouse" / "sleeptime.duckdb"), str(stop), str(out)], cwd=ROOT)
    try:
        time.sleep(3)  # let it read the first snapshot
        extra = generate_corpus(2, seed=77)
        renamed = [type(r)(context=r.context.model_copy(update={"id": f"extra-{i}"}),
                           queries=tuple(q.model_copy(update={"context_id": f"extra-{i}"}) for q in r.queries))
                   for i, r in enumerate(extra)]
        write_project_jsonl([*load_corpus(pipeline.corpus).rows, *renamed], pipeline.corpus)
        summary = pipeline.run("refresh")
        assert summary.diff.counts()["new"] == 2
        time.sleep(1)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    result = json.loads(out.read_text())
    assert result["errors"] == []
    assert result["reads"] > 20
    # Only whole snapshots were ever seen: before (4 contexts, 8 variants) and after (6, 12).
    assert {tuple(s) for s in result["seen"]} <= {(8, 4), (12, 6)}
    assert (12, 6) in {tuple(s) for s in result["seen"]}
