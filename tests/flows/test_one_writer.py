"""One writer per output folder: a second run exits 75 before any model call, or waits with --wait."""

import subprocess
import sys
import time

import pytest

from sleeptime.storage.lock import EXIT_LOCKED, OutputLock, OutputLocked
from tests.flows.conftest import Pipeline, kill_session, spawn_run



def test_the_lock_names_its_holder_and_is_released_by_the_os(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sleeptime.storage.lock import OutputLock\n"
         "with OutputLock(sys.argv[1], 'r-holder'):\n    print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked) as err:
            OutputLock(tmp_path, "r-second").acquire()
        assert f"pid {holder.pid}" in str(err.value) and "r-holder" in str(err.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait()
    with OutputLock(tmp_path, "r-third"):  # the kernel released it with the process
        pass


@pytest.mark.slow
def test_two_runs_on_one_output_folder_one_publishes_the_other_exits_75(prefect_api_url, tmp_path):
    p = Pipeline(tmp_path / "p", contexts=4, seed=5)
    first = spawn_run(p, tmp_path, api_url=prefect_api_url, capture=True)
    try:
        deadline = time.monotonic() + 120
        while not (p.out / ".sleeptime.lock.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (p.out / ".sleeptime.lock.json").exists(), "the first run never took the lock"
        second = spawn_run(p, tmp_path, api_url=prefect_api_url, capture=True)
        out, _ = second.communicate(timeout=120)
        assert second.returncode == EXIT_LOCKED, out
        out = " ".join(out.split())  # the console wraps long lines
        assert "in use by another sleeptime run" in out and f"pid {first.pid}" in out
        assert "model:" not in out  # it stopped before the run summary: no model call was made
        first_out, _ = first.communicate(timeout=600)
        assert first.returncode == 0, first_out
    finally:
        kill_session(first.pid)
    # History holds the one real run and nothing else: no false "published" row.
    runs = p.lake_counts()["runs"]
    assert runs == 1
    assert p.count("SELECT count(*) FROM runs WHERE status = 'published'") == 1
    # A run that waits instead queues behind a holder and then runs.
    with OutputLock(p.out, "r-manual"):
        waiting = spawn_run(p, tmp_path, "--wait", api_url=prefect_api_url, capture=True)
        time.sleep(3)
        assert waiting.poll() is None, "a --wait run must queue, not exit"
    out, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, out
    assert p.count("SELECT count(*) FROM runs WHERE status = 'published'") == 2
