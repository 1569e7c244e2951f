"""The published policy at 10M answers: fitting it once at publish, loading it on every reload.

    .venv/bin/python bench/policy_reload.py [--warehouse out/bench/publish_scale/warehouse/sleeptime.duckdb]

The warehouse is the one bench/publish_scale.py leaves (1M variants, 10M answers; run that first,
about 5 minutes). On a copy of it (the migrations applied, so the policies table has the v2
columns): ``derive_policy`` is timed (the fit a publish does when data or traffic changed) and its
rows inserted; then, each in a fresh process so nothing is cached, the policy work of a service
reload (``load_published_policy``: the newest version's rows, ``Policy.from_rows``) and the whole
``load_serving_snapshot`` (contexts and variants too), 5 times each. The acceptance target: a hot
reload at 10M answers takes under 1 s of policy work (before: about 15 s, the service refitted).

Writes bench/results/policy_reload.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT = ROOT / "out" / "bench" / "publish_scale" / "warehouse" / "sleeptime.duckdb"
REPEATS = 5

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from sleeptime.policy.store import load_published_policy
from sleeptime.storage.warehouse import connect_read_only
imported = time.perf_counter() - t0
path, mode = sys.argv[1], sys.argv[2]
if mode == "policy":
    con = connect_read_only(path)
    t = time.perf_counter()
    policy = load_published_policy(con)
    print(json.dumps({"seconds": time.perf_counter() - t, "context_plans": len(policy.planned), "import_s": imported}))
else:
    from sleeptime.config import load_config
    from sleeptime.service.snapshot import load_serving_snapshot
    config = load_config(sys.argv[3])
    t = time.perf_counter()
    snap = load_serving_snapshot(path, config)
    print(json.dumps({"seconds": time.perf_counter() - t, "policy_seconds": snap.policy_seconds,
                      "contexts": len(snap.contexts)}))
"""


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def child(path: Path, mode: str) -> dict:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DO_NOT_TRACK": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), mode, str(ROOT / "sleeptime.yaml")],
                         check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", type=Path, default=DEFAULT)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "policy_reload")
    args = parser.parse_args()
    if not args.warehouse.exists():
        sys.exit(f"no warehouse at {args.warehouse}: run bench/publish_scale.py first (it leaves one there)")

    import duckdb

    from sleeptime.config import load_config
    from sleeptime.policy.store import derive_policy
    from sleeptime.storage.lake import as_arrow
    from sleeptime.storage.warehouse import apply_migrations

    config = load_config(ROOT / "sleeptime.yaml")
    result: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": _load()}
    with tempfile.TemporaryDirectory(prefix="policy-reload-", dir=args.warehouse.parent.parent) as tmp:
        path = Path(tmp) / "sleeptime.duckdb"
        shutil.copyfile(args.warehouse, path)
        con = duckdb.connect(str(path))
        apply_migrations(con)
        result["answers"] = con.execute("SELECT count(*) FROM answers").fetchone()[0]
        result["graded_current"] = con.execute(
            "SELECT count(*) FROM answers_current WHERE correct IS NOT NULL AND sample_index = 0").fetchone()[0]
        run_id = con.execute("SELECT max(run_id) FROM runs").fetchone()[0] + "x"
        started = time.perf_counter()
        derived = derive_policy(con, config.policy_settings, run_id)
        result["derive_s"] = time.perf_counter() - started
        rows = derived["policies"]
        result["policy_rows"] = len(rows)
        started = time.perf_counter()
        table = as_arrow("policies", rows)
        con.register("new_policy", table)
        con.execute("INSERT INTO policies BY NAME SELECT * FROM new_policy")
        result["insert_s"] = time.perf_counter() - started
        con.close()
        result["load_after_fit"] = _load()
        result["policy_load"] = [child(path, "policy") for _ in range(REPEATS)]
        result["snapshot_load"] = [child(path, "snapshot") for _ in range(REPEATS)]
    result["load_after"] = _load()
    pol = statistics.median(r["seconds"] for r in result["policy_load"])
    snap = statistics.median(r["seconds"] for r in result["snapshot_load"])
    snap_pol = statistics.median(r["policy_seconds"] for r in result["snapshot_load"])
    result.update(policy_load_median_s=pol, snapshot_load_median_s=snap, snapshot_policy_median_s=snap_pol,
                  goal_met=max(pol, snap_pol) < 1.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = f"""# The published policy at 10M answers: fit once, load on every reload

`python bench/policy_reload.py` on {result['when']}, on a copy of the warehouse bench/publish_scale.py leaves
({result['answers']:,} answers, {result['graded_current']:,} graded current ones the fit reads). Load average before:
{result['load_before']}; after the fit: {result['load_after_fit']}; at the end: {result['load_after']}.

| step | seconds |
|---|---|
| `derive_policy` (the publish's fit: read the per-context summaries, estimate, optimise, {result['policy_rows']:,} rows) | {result['derive_s']:.1f} |
| insert the rows into the warehouse | {result['insert_s']:.2f} |
| **reload: `load_published_policy`** (the newest version's rows, `Policy.from_rows`), median of {REPEATS} fresh processes | **{pol:.2f}** |
| the whole `load_serving_snapshot` (contexts and variants too), median of {REPEATS} | {snap:.2f} |
| of which the policy | {snap_pol:.2f} |

Goal: a hot reload at 10M answers takes under 1 s of policy work: **{'MET' if result['goal_met'] else 'NOT MET'}**
(before this change the service refitted the policy on every reload: about 15 s at this size,
bench/results/warehouse_scale.md). The reload reads the `policies` table only; no answers.
Each run: {', '.join(f"{r['seconds']:.2f}" for r in result['policy_load'])} s (policy), {', '.join(f"{r['seconds']:.2f}" for r in result['snapshot_load'])} s (snapshot).
"""
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
