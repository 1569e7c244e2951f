"""The wheel outside the checkout (issue 15).

Builds the wheel from a copy of the source tree, installs it (no dependencies) into a fresh
virtualenv that sees this environment's dependencies through a plain path in a .pth file (so
the editable install's finder of the checkout is never loaded), and from a folder outside the
repository runs that venv's ``sleeptime run`` on 3 contexts of the default demo corpus (which
the run generates there), then ``sleeptime report`` and ``sleeptime serve``. Everything they read
at run time must come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sleeptime", "flows", "tasks", "warehouse")  # the wheel's top-level packages
# Not part of a build: left out of the copy the wheel is built from (at the top of the tree).
TOP_LEVEL_SKIP = {".git", ".venv", "venv", "out", "build", "dist", ".pytest_cache"}
# Package data: files the product reads at run time, wherever they sit under sleeptime/.
ASSET_DIRS = ("templates", "static")


def _copy_ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder).resolve() == ROOT
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in TOP_LEVEL_SKIP)}


def _check_build_requirements() -> None:
    """--no-build-isolation builds with this environment's setuptools: say so if it is too old."""
    from packaging.requirements import Requirement

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    problems = []
    for requirement in map(Requirement, requires):
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement} (installed: {installed})")
    if problems:
        pytest.fail(f"the wheel is built without build isolation, so this environment needs the build "
                    f"requirements of pyproject.toml: {', '.join(problems)}; `make install-test` installs them")


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _source_files(pattern_dirs: tuple[str, ...]) -> set[str]:
    """Wheel names of the checkout's Python modules, SQL migrations and asset files."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            rel = path.relative_to(ROOT)
            if not path.is_file() or "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
                continue
            if path.suffix == ".py" or (package == "warehouse" and path.suffix == ".sql") \
                    or (package == "sleeptime" and any(d in rel.parts[1:-1] for d in pattern_dirs)):
                found.add(rel.as_posix())
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin folder, its site-packages, environment for its commands, wheel)."""
    _check_build_requirements()
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    # A copy, so the build neither writes build/ and *.egg-info into the checkout nor packs stale
    # files a previous build left in build/lib.
    shutil.copytree(ROOT, source, ignore=_copy_ignore)
    wheelhouse = tmp / "wheelhouse"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--quiet", "-w", str(wheelhouse), str(source)], timeout=300)
    (wheel,) = wheelhouse.glob("sleeptime-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--quiet", "--disable-pip-version-check", str(wheel)], timeout=300)
    site_packages = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              timeout=60).stdout.strip())
    # This environment's dependencies as plain path lines: site does not process the .pth files
    # inside a folder added this way, so the checkout's editable finder stays out.
    dependencies = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site_packages / "_sleeptime_test_dependencies.pth").write_text("".join(f"{p}\n" for p in dependencies))

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SLEEPTIME_SERVICE_"))
           and k not in ("VIRTUAL_ENV", "PREFECT_API_URL", "PREFECT_API_KEY", "RAY_ADDRESS")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != Path(sys.executable).parent.resolve()]
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *path]),
        VIRTUAL_ENV=str(venv),
        PYTHONUNBUFFERED="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        DO_NOT_TRACK="1",
        PREFECT_HOME=str(tmp / "prefect-home"),  # the ephemeral server's database: this test's own
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        GX_ANALYTICS_ENABLED="False",
    )
    return python, venv / "bin", site_packages, env, wheel


@pytest.mark.slow
def test_wheel_ships_the_code_sql_and_assets(installed):
    *_, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {n for n in top if n.endswith(".dist-info")}
    assert len(dist_info) == 1 and top - dist_info == set(PACKAGES), f"top-level entries of the wheel: {sorted(top)}"
    expected = _source_files(ASSET_DIRS)
    assert {f"warehouse/migrations/{p.name}" for p in (ROOT / "warehouse" / "migrations").glob("*.sql")} <= expected
    missing = sorted(expected - names)
    assert not missing, f"files of the checkout the wheel lacks: {missing}"


CHECK = r"""
import json, sys
import flows, sleeptime, tasks, warehouse
from sleeptime.storage.warehouse import migrations, migrations_dir

print(json.dumps({
    "files": {m.__name__: m.__file__ for m in (flows, sleeptime, tasks, warehouse)},
    "migrations_dir": str(migrations_dir()),
    "versions": [v for v, _, _ in migrations()],
    "editable": sorted(n for n in sys.modules if "editable" in n),
}))
"""


def _migration_versions() -> list[int]:
    return sorted(int(p.name.split("_", 1)[0]) for p in (ROOT / "warehouse" / "migrations").glob("*.sql"))


@pytest.mark.slow
def test_imports_resolve_to_the_wheel(installed, tmp_path):
    python, _, site_packages, env, _ = installed
    out = json.loads(_run([str(python), "-c", CHECK], timeout=120, cwd=tmp_path, env=env).stdout.splitlines()[-1])
    for name, file in out["files"].items():
        assert Path(file).is_relative_to(site_packages), f"{name} imported from {file}, not from the wheel in {site_packages}"
    assert not out["editable"], f"the checkout's editable finder was loaded: {out['editable']}"
    assert Path(out["migrations_dir"]) == site_packages / "warehouse" / "migrations"
    assert out["versions"] == _migration_versions()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_run_report_and_serve_from_the_wheel(installed, tmp_path):
    import duckdb
    import httpx

    _, bin_dir, _, env, _ = installed
    sleeptime = str(bin_dir / "sleeptime")
    work = tmp_path / "work"  # outside the repository: nothing can be found relative to it
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT)
    # No corpus setting: the default, data/demo/corpus.jsonl relative to the working folder, which
    # the run generates with the product's generator when missing; only its first 3 contexts.
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "max_contexts": 3,
        "sleep_budgets": [{"name": "none", "max_tokens": 0}, {"name": "small", "max_tokens": 48}],
        "test_budgets": [{"name": "t0-direct", "verbosity": 0, "max_tokens": 16},
                         {"name": "t2-steps", "verbosity": 2, "max_tokens": 80}],
        "shard_size": 3,
        "workers": 1,
        "pass_at_k": 1,
    }))

    ran = _run([sleeptime, "run", "--config", str(config)], timeout=600, cwd=work, env=env)
    assert "published warehouse:" in ran.stdout, ran.stdout
    corpus = work / "data" / "demo" / "corpus.jsonl"
    assert corpus.read_bytes() == (ROOT / "data" / "demo" / "corpus.jsonl").read_bytes()
    with duckdb.connect(str(work / "out" / "warehouse" / "sleeptime.duckdb"), read_only=True) as con:
        applied = [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
        contexts = con.execute("SELECT count(*) FROM contexts WHERE NOT deleted").fetchone()[0]
        answers = con.execute("SELECT count(*) FROM answers").fetchone()[0]
        run_id, status = con.execute("SELECT run_id, status FROM runs").fetchone()
    assert applied == _migration_versions()
    assert (contexts, status) == (3, "published") and answers > 0

    # The service starts while the report is written (both only read the warehouse).
    port = _free_port()
    service_env = {**env, "SLEEPTIME_SERVICE_AUTH": "false", "SLEEPTIME_SERVICE_ACCESS_LOG": "false"}
    serve = subprocess.Popen([sleeptime, "serve", "--config", str(config), "--port", str(port)],
                             cwd=work, env=service_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        report = work / "out" / "report" / "report.html"
        report.unlink()  # the run wrote one: `sleeptime report` must write it again
        reported = _run([sleeptime, "report", "--config", str(config)], timeout=300, cwd=work, env=env)
        assert "wrote" in reported.stdout and report.is_file()
        html = report.read_text(encoding="utf-8")
        assert html.lstrip().lower().startswith("<!doctype html") and run_id in html

        ready = None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 120
            while ready is None and time.monotonic() < deadline:
                assert serve.poll() is None, serve.stdout.read()
                try:
                    health = client.get("/healthz")
                    if health.status_code == 200 and (r := client.get("/readyz")).status_code == 200:
                        assert health.json() == {"status": "ok"}
                        ready = r.json()
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            assert ready is not None and ready["contexts"] == 3, ready
            row = json.loads(corpus.read_text(encoding="utf-8").splitlines()[0])
            answered = client.post("/v1/answer", json={"context_id": row["id"], "question": row["queries"][0]["text"]})
            assert answered.status_code == 200, answered.text
            body = answered.json()
            assert body["context_id"] == row["id"] and body["snapshot"] == ready["snapshot"]
            assert body["usage"]["completion_tokens"] > 0
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert "Application shutdown complete" in output, output


def test_migrations_that_are_not_installed_fail_clearly(monkeypatch):
    import duckdb

    from sleeptime.storage import warehouse

    monkeypatch.setattr(warehouse, "MIGRATIONS_PACKAGE", "sleeptime_no_such_package")
    with pytest.raises(warehouse.MigrationsNotFound, match=r"not importable .*Reinstall sleeptime"):
        warehouse.migrations()
    monkeypatch.setattr(warehouse, "MIGRATIONS_PACKAGE", "flows")  # a package, but without migrations/*.sql
    with duckdb.connect() as con, pytest.raises(warehouse.MigrationsNotFound, match=r"has no \*\.sql files"):
        warehouse.apply_migrations(con)
