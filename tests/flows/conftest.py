import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sleeptime.dataset import load_corpus, write_demo_corpus, write_project_jsonl


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    """The test harness's Prefect API: a real server, shared with the runs tests start as processes."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: the flow joins it instead of starting its own."""
    import ray

    from tasks.ray_pool import start_local_ray

    start_local_ray(2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def pipeline(prefect_harness, ray_session, tmp_path):
    return Pipeline(tmp_path)


TINY = {
    "sleep_budgets": [{"name": "none", "max_tokens": 0}, {"name": "small", "max_tokens": 48}, {"name": "large", "max_tokens": 512}],
    "test_budgets": [{"name": "t0-direct", "verbosity": 0, "max_tokens": 16}, {"name": "t2-steps", "verbosity": 2, "max_tokens": 80}],
    "shard_size": 2,
    "workers": 2,
    "pass_at_k": 1,
}


class Pipeline:
    """A tiny corpus and configuration in a temporary folder, and ways to run and inspect it."""

    def __init__(self, root: Path, contexts: int = 4, seed: int = 3):
        self.root = root
        self.corpus = write_demo_corpus(root / "corpus.jsonl", contexts=contexts, seed=seed)
        self.out = root / "out"
        self.config = root / "config.yaml"
        self.write_config()

    def write_config(self, **extra) -> Path:
        data = {**TINY, "corpus": str(self.corpus), "output_dir": str(self.out), **extra}
        self.config.write_text(yaml.safe_dump(data))
        return self.config

    def run(self, flow: str = "run"):
        import flows.pipeline as pipelines

        return getattr(pipelines, flow)(config_path=str(self.config))

    def run_flow(self, **params):
        """The main flow with flow parameters (``wait_for_batches``, ``collect_only``, ...)."""
        from flows.pipeline import run

        return run(config_path=str(self.config), **params)

    def rows(self):
        return load_corpus(self.corpus).rows

    def replace_rows(self, rows) -> None:
        write_project_jsonl(rows, self.corpus)

    def warehouse(self):
        from sleeptime.storage.warehouse import Warehouse

        return Warehouse(self.out / "warehouse" / "sleeptime.duckdb")

    def count(self, sql: str) -> int:
        with self.warehouse().read() as con:
            return con.execute(sql).fetchone()[0]

    def lake_counts(self) -> dict[str, int]:
        from sleeptime.storage import Lake

        lake = Lake(self.out / "lake")
        return {t: lake.read(t).num_rows for t in ("contexts", "queries", "variants", "answers", "policies", "runs")}


ROOT = Path(__file__).resolve().parents[2]


def spawn_run(p: Pipeline, tmp_path: Path, *args: str, api_url: str | None, env: dict[str, str] | None = None,
              capture: bool = False) -> subprocess.Popen:
    """``sleeptime run`` on ``p``'s config as its own process, in a new session (so that
    ``kill_session`` reaches everything it starts). With ``api_url`` it reports to that Prefect
    server (the harness's: about 10 s less than starting an ephemeral one each time); without,
    it starts its own ephemeral server as a run on a bare machine does."""
    env = {**(env if env is not None else os.environ), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "sleeptime.cli", "run", "--config", str(p.config), *args], cwd=ROOT, env=env,
        stdout=out, stderr=subprocess.STDOUT if capture else subprocess.DEVNULL, text=True, start_new_session=True,
    )


def dump(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def kill_session(session: int) -> None:
    """SIGKILL everything left in the run's session: a killed run orphans its ephemeral Prefect
    server and Ray's processes, which keep their own process groups."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
