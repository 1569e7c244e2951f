"""Crash recovery beyond the happy path: a real SIGKILL of a Ray worker mid-run, and of the whole
flow at the riskiest points of a publish. Each rerun must end with exactly the rows of a run that
never crashed, and the published warehouse must be a whole snapshot at every moment."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sleeptime import _failpoints
from sleeptime.dataset import write_demo_corpus
from tests.flows.conftest import Pipeline, kill_session
from tests.flows.test_crash_and_readers import _keys, _lake_rows

ROOT = Path(__file__).resolve().parents[2]


def _spawn_run(p: Pipeline, tmp_path: Path, **env_extra: str) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONUNBUFFERED": "1", **env_extra}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "sleeptime.cli", "run", "--config", str(p.config)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _published_state(p: Pipeline) -> tuple[tuple[int, int], int, int]:
    with p.warehouse().read() as con:
        contexts = con.execute("SELECT count(*) FROM contexts_current").fetchone()[0]
        variants = con.execute("SELECT count(*) FROM variants_current").fetchone()[0]
    return p.warehouse().identity(), contexts, variants


def _staged_rows(p: Pipeline, table: str = "variants") -> int:
    from sleeptime.storage import Lake

    try:
        return Lake(p.out / "lake", read_only=True).read_staged(table).num_rows
    except Exception:  # the run has not created the lake yet
        return 0


@pytest.fixture(scope="module")
def clean_history(prefect_harness, ray_session, tmp_path_factory):
    """What a run on 4 contexts, then a run on 6, publish when nothing crashes."""
    clean = Pipeline(tmp_path_factory.mktemp("clean"), contexts=4, seed=8)
    clean.run()
    write_demo_corpus(clean.corpus, contexts=6, seed=8)
    clean.run()
    return _keys(clean), _lake_rows(clean)


@pytest.mark.slow
@pytest.mark.parametrize("point", _failpoints.POINTS)
def test_sigkill_during_publish_leaves_the_old_snapshot_and_the_rerun_completes_it(clean_history, tmp_path, point):
    crashed = Pipeline(tmp_path / "crashed", contexts=4, seed=8)
    crashed.run()
    before = _published_state(crashed)
    write_demo_corpus(crashed.corpus, contexts=6, seed=8)

    proc = _spawn_run(crashed, tmp_path, **{_failpoints.ENV: point})
    try:
        assert proc.wait(timeout=300) == -signal.SIGKILL, "the run was not killed at the failpoint"
    finally:
        kill_session(proc.pid)

    from sleeptime.storage import Lake

    committed = point in (_failpoints.PUBLISH_BEFORE_SWAP, _failpoints.PUBLISH_AFTER_SWAP)
    runs = {r["run_id"]: r["status"] for r in Lake(crashed.out / "lake", read_only=True).read("runs").to_pylist()}
    if point == _failpoints.PUBLISH_AFTER_SWAP:
        # The switch happened: readers see the new snapshot, and the lake says so.
        assert _published_state(crashed)[1:] == (6, 12)
        assert sorted(runs.values()) == ["published", "published"]
    else:
        # Readers still see the last whole snapshot: the same file, the same counts.
        assert _published_state(crashed) == before
        # The lake holds the run as published only if its commit happened (the warehouse lags).
        assert sorted(runs.values()) == (["published", "published"] if committed else ["published"])
        assert _staged_rows(crashed) == (0 if committed else 4), "uncommitted work waits in staging"

    resumed = crashed.run()
    assert resumed.status == "published" and resumed.counters.calls == 0  # nothing recomputed
    assert _published_state(crashed)[1:] == (6, 12)
    if point == _failpoints.PUBLISH_BEFORE_SWAP:
        assert resumed.extra["recovered"]["warehouse_rows_caught_up"] > 0
    statuses = sorted(r["status"] for r in Lake(crashed.out / "lake", read_only=True).read("runs").to_pylist())
    # Truthful history: the killed run is published if its commit happened, else interrupted.
    assert statuses == ["published"] * 3 if committed else ["interrupted", "published", "published"]
    keys, lake_rows = clean_history
    assert _keys(crashed) == keys
    assert _lake_rows(crashed) == lake_rows
    assert not list((crashed.out / "warehouse").glob(".candidate-*")), "crashed candidates are cleaned up"


def _model_workers(session: int) -> list[int]:
    """PIDs of the run's Ray actor processes (titled ray::ModelWorker...): Ray gives each worker its own
    process group, but they stay in the session the run was started in."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if not cmdline.startswith(b"ray::ModelWorker") or os.getsid(int(entry.name)) != session:
                continue
        except (OSError, ProcessLookupError):
            continue
        found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_sigkill_of_a_ray_worker_mid_run_is_survived(clean_history, tmp_path):
    crashed = Pipeline(tmp_path / "crashed", contexts=4, seed=8)
    crashed.run()
    write_demo_corpus(crashed.corpus, contexts=6, seed=8)
    crashed.write_config(shard_size=1)

    proc = _spawn_run(crashed, tmp_path)
    killed = None
    deadline = time.monotonic() + 240
    try:
        # Wait until the workers are busy (the first shard is staged), then kill one.
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            if _model_workers(proc.pid) and _staged_rows(crashed):
                for pid in _model_workers(proc.pid):  # listed again: the staging read takes a moment
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:  # that worker exited meanwhile
                        continue
                    killed = pid
                    break
            time.sleep(0.02)
        assert killed is not None, "never saw a busy Ray worker to kill"
        assert proc.wait(timeout=300) == 0, "the run did not survive the lost worker"
    finally:
        kill_session(proc.pid)
    keys, lake_rows = clean_history
    assert _keys(crashed) == keys
    assert _lake_rows(crashed) == lake_rows
