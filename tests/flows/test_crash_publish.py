"""Crash recovery beyond the happy path: a real SIGKILL of a Ray worker mid-run, and of the whole
flow at the riskiest points of a publish. Each rerun must end with exactly the rows of a run that
never crashed, and the published warehouse must be a whole snapshot at every moment."""

import os
import signal
import time
from pathlib import Path

import pytest

from sleeptime import _failpoints
from sleeptime.dataset import write_demo_corpus
from tests.flows.conftest import Pipeline, kill_session, spawn_run
from tests.flows.test_crash_and_readers import _keys, _lake_rows



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


def _kill_at(p: Pipeline, tmp_path: Path, api_url: str, point: str) -> None:
    proc = spawn_run(p, tmp_path, api_url=api_url, env={**os.environ, _failpoints.ENV: point})
    try:
        assert proc.wait(timeout=300) == -signal.SIGKILL, f"the run was not killed at {point}"
    finally:
        kill_session(proc.pid)


def _statuses(p: Pipeline) -> list[str]:
    from sleeptime.storage import Lake

    return sorted(r["status"] for r in Lake(p.out / "lake", read_only=True).read("runs").to_pylist())


def _assert_as_if_never_crashed(p: Pipeline, clean_history) -> None:
    keys, lake_rows = clean_history
    assert _keys(p) == keys
    assert _lake_rows(p) == lake_rows
    assert not list((p.out / "warehouse").glob(".candidate-*")), "crashed candidates are cleaned up"


@pytest.mark.slow
def test_sigkill_at_each_point_before_the_switch_leaves_the_old_snapshot_and_a_rerun_completes_it(
        clean_history, prefect_api_url, tmp_path):
    """Killed at every publish point up to the warehouse switch, one after another on one output:
    each rerun resumes the staged work with no model call and is killed at the next point."""
    crashed = Pipeline(tmp_path / "crashed", contexts=4, seed=8)
    crashed.run()
    before = _published_state(crashed)
    write_demo_corpus(crashed.corpus, contexts=6, seed=8)

    points = [p for p in _failpoints.POINTS if p != _failpoints.PUBLISH_AFTER_SWAP]
    assert points[-1] == _failpoints.PUBLISH_BEFORE_SWAP
    for i, point in enumerate(points):
        _kill_at(crashed, tmp_path, prefect_api_url, point)
        committed = point == _failpoints.PUBLISH_BEFORE_SWAP
        # Readers still see the last whole snapshot. The file is the same one after the first
        # kill; later runs' recovery applied the "interrupted" row the previous one committed.
        state = _published_state(crashed)
        assert state[1:] == before[1:] and (i > 0 or state == before), point
        # The lake holds the run as published only if its commit happened (the warehouse lags);
        # the next run's recovery gave the first killed run's staged rows an "interrupted" row.
        expected = ["published"] + (["interrupted"] if i else []) + (["published"] if committed else [])
        assert _statuses(crashed) == sorted(expected), point
        assert _staged_rows(crashed) == (0 if committed else 4), f"{point}: uncommitted work waits in staging"

    resumed = crashed.run()
    assert resumed.status == "published" and resumed.counters.calls == 0  # nothing recomputed
    assert resumed.extra["recovered"]["warehouse_rows_caught_up"] > 0
    assert _published_state(crashed)[1:] == (6, 12)
    # Truthful history: the first killed run is interrupted, the one killed after its commit published.
    assert _statuses(crashed) == ["interrupted", "published", "published", "published"]
    _assert_as_if_never_crashed(crashed, clean_history)


@pytest.mark.slow
def test_sigkill_after_the_switch_leaves_the_new_snapshot_and_a_rerun_changes_nothing(
        clean_history, prefect_api_url, tmp_path):
    crashed = Pipeline(tmp_path / "crashed", contexts=4, seed=8)
    crashed.run()
    write_demo_corpus(crashed.corpus, contexts=6, seed=8)

    _kill_at(crashed, tmp_path, prefect_api_url, _failpoints.PUBLISH_AFTER_SWAP)
    # The switch happened: readers see the new snapshot, and the lake says so.
    assert _published_state(crashed)[1:] == (6, 12)
    assert _statuses(crashed) == ["published", "published"]
    assert _staged_rows(crashed) == 0

    resumed = crashed.run()
    assert resumed.status == "published" and resumed.counters.calls == 0
    assert _published_state(crashed)[1:] == (6, 12)
    assert _statuses(crashed) == ["published"] * 3
    _assert_as_if_never_crashed(crashed, clean_history)


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
def test_sigkill_of_a_ray_worker_mid_run_is_survived(clean_history, prefect_api_url, tmp_path):
    crashed = Pipeline(tmp_path / "crashed", contexts=4, seed=8)
    crashed.run()
    write_demo_corpus(crashed.corpus, contexts=6, seed=8)
    crashed.write_config(shard_size=1)

    proc = spawn_run(crashed, tmp_path, api_url=prefect_api_url)
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
    _assert_as_if_never_crashed(crashed, clean_history)
