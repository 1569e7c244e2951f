"""The warehouse at scale: every dashboard view and the policy fit on >= 1M variants and 10M answers.

Superseded for storage by bench/publish_scale.py (the DuckLake lake, incremental publish, full
rebuild, views). Step 4 below (the Parquet lake and ``Warehouse.build``) measured the storage
retired with issue 11; it is off by default (``--lake-answers 0``) and no longer runs.

    .venv/bin/python bench/warehouse_scale.py [--variants 1000000] [--answers 10000000]
                                              [--query-log 100000] [--lake-answers N] [--out DIR]

No model is called: the rows are generated directly in SQL, shaped like what the pipeline writes
(ids, hashes, texts, token counts and costs of the sizes the reference reasoner produces). Steps,
each in a fresh subprocess so that its peak RSS is its own:

1. generate: a fresh DuckDB file under ``--out`` (default out/bench/warehouse_scale), the schema
   applied by the product's own ``apply_migrations``, then every table filled with INSERT ...
   SELECT over range(). Shape (defaults): 100k contexts, each in two versions (one change of its
   text, so half of everything is history) and 1% of them removed since (tombstones); 10
   queries per context version (5% without a gold answer); sleep budgets none + small (1
   sample), medium (2 samples), large (2 samples), so 5 variants per context version (1M);
   test-time answers for an evaluated subset of the contexts (as ``sleeptime run --max-contexts``
   gives), both versions, on the full grid: every query x (raw context + its 5 variants) x 5 test budgets,
   plus 2 extra raw samples per (query, test budget) for pass@3, i.e. 40 answers per query
   (10M answers for 12.5k contexts); 250 runs; a few thousand failures (some fixed by a later
   run, some open); 500 quarantined rows; ``--query-log`` rows of service traffic.
   Pseudo-random values come from DuckDB's hash() of the row's coordinates and a fixed seed, not
   random()/setseed(): setseed only fixes random() on a single thread, hash() is the same on any
   number of threads, so the data are identical from run to run.
2. policy fit: ``sleeptime.policy.store.derive_policy`` on the file, as the publish step calls
   it, then the rows appended with ``Warehouse.append`` (plus four older copies with older run
   ids, so ``v_policy_current`` has history to pick from).
3. views: a read-only connection (as a dashboard opens it); for every view of the schema (the
   query-log views included), ``SELECT count(*)`` and the whole view fetched as Arrow; then every
   ```sql query of docs/dashboards.md. When the first run takes under ``--fast-below`` seconds,
   the figure is the median of 3 more; otherwise it is that first run.
4. lake build: the tables written as Parquet in the lake layout
   (lake/<table>/published=<run_id>/*.parquet, one folder per run, zstd as the lake writes),
   then ``Warehouse.build`` from it, as every publish does. ``--lake-answers`` caps the size of
   this step separately (default: the full warehouse); 0 skips it.

``--gate`` also times the publish step's quality gate (``gate_snapshot``) on the generated file; it
takes about a minute per 50k current variants, so it is off by default (see the findings).

Each step's wall time, CPU time, peak RSS and the CPU other processes used meanwhile are recorded
(on a shared machine; ``--max-wait S`` waits up to S seconds before each step for that load to
settle). Prints a markdown report and writes it to bench/results/warehouse_scale.md (``--results``;
``--no-write-results`` only prints). The generated files stay under ``--out`` (removed at the start
of the next run; ``--clean`` removes them at the end) with a results.json that ``--render-from``
renders again without running anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _measure  # noqa: E402

DEFAULT_OUT = ROOT / "out" / "bench" / "warehouse_scale"
DEFAULT_RESULTS = ROOT / "bench" / "results" / "warehouse_scale.md"
DASHBOARDS_MD = ROOT / "docs" / "dashboards.md"
MIB = 1024 * 1024

VERSIONS = 2  # every context has two versions of its text: the first is history
QUERIES = 10  # per context version
VARIANT_SLOTS = (("small", 0, 48), ("medium", 0, 160), ("medium", 1, 160), ("large", 0, 512), ("large", 1, 512))
PASS_AT_K = 3
# (name, accuracy gain, mean completion tokens), as the five default test budgets
TEST_BUDGETS = (("t0-direct", 0.00, 6), ("t1-brief", 0.03, 15), ("t2-steps", 0.08, 40), ("t3-explain", 0.12, 90),
                ("t4-check", 0.15, 200))
ANSWERS_PER_QUERY = (PASS_AT_K + len(VARIANT_SLOTS)) * len(TEST_BUDGETS)  # 40
RUNS = 250
SEED = 20251123


# --- shape -----------------------------------------------------------------------------------------


def shape(variants: int, answers: int, query_log: int) -> dict[str, int]:
    contexts = max(1, round(variants / (VERSIONS * len(VARIANT_SLOTS))))
    evaluated = max(1, min(contexts, round(answers / (VERSIONS * QUERIES * ANSWERS_PER_QUERY))))
    return {
        "contexts": contexts,
        "evaluated": evaluated,
        "stride": max(1, contexts // evaluated),
        "variants": contexts * VERSIONS * len(VARIANT_SLOTS),
        "answers": evaluated * VERSIONS * QUERIES * ANSWERS_PER_QUERY,
        "queries": contexts * VERSIONS * QUERIES,
        "query_log": query_log,
    }


# --- generation (SQL) ----------------------------------------------------------------------------------


def _values(rows) -> str:
    def lit(v):
        return "NULL" if v is None else (f"'{v}'" if isinstance(v, str) else repr(v))
    return ", ".join("(" + ", ".join(lit(v) for v in row) + ")" for row in rows)


def generate_sql(s: dict[str, int]) -> list[tuple[str, str]]:
    """(label, statement) in order; every table of the schema gets its rows."""
    C, E, stride, L = s["contexts"], s["evaluated"], s["stride"], s["query_log"]
    slots = _values(VARIANT_SLOTS)
    sources = _values([("none", None, k, 512) for k in range(PASS_AT_K)] + [(b, i, 0, cap) for b, i, cap in VARIANT_SLOTS])
    budgets = _values([(i, n, g, t) for i, (n, g, t) in enumerate(TEST_BUDGETS)])
    macros = f"""
        CREATE OR REPLACE TEMP MACRO u(a, b, c) AS (hash(a, b, c, {SEED}) % 1000000) / 1000000.0;
        CREATE OR REPLACE TEMP MACRO run_id_of(k) AS
            'r' || strftime(TIMESTAMP '2025-01-01 00:00:00' + to_hours(CAST(k AS BIGINT) * 12), '%Y%m%dT%H%M%S%f');
        CREATE OR REPLACE TEMP MACRO name_of(i) AS
            ['Hugo', 'Jade', 'Sara', 'Amy', 'Kai', 'Eli', 'Ben', 'Eva', 'Mia', 'Fin'][CAST(i % 10 AS BIGINT) + 1];
        CREATE OR REPLACE TEMP MACRO variant_id_of(h, budget, sample) AS
            'v_' || left(md5(h || '|reference|' || budget || '|' || sample || '|v1'), 16);
    """
    return [
        ("macros", macros),
        ("runs", f"""
        INSERT INTO runs
        SELECT run_id_of(k),
               TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_hours(k * 12),
               TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_hours(k * 12) + to_seconds(60 + k % 600),
               CASE WHEN k % 17 = 5 THEN 'rejected' WHEN k % 29 = 3 THEN 'failed' ELSE 'published' END,
               'data/corpus.jsonl',
               CASE WHEN k < 100 THEN {C} // 100 ELSE 0 END,
               CASE WHEN k >= 100 AND k < 200 THEN {C} // 100 ELSE 0 END,
               {C} - {C} // 100, CASE WHEN k = 200 THEN {C} // 100 ELSE 0 END,
               {C} // 100 * 5, {E} // 100 * 400, {C} // 100 * 5 + {E} // 100 * 400,
               ({C} // 100 * 5 + {E} // 100 * 400) * 180, ({C} // 100 * 5 + {E} // 100 * 400) * 60,
               ({C} // 100 * 5 + {E} // 100 * 400) * 0.00006, k % 7, k % 3, 60 + k % 600,
               '{{"shards": 8, "workers": 2, "gate": "quality gate passed: contexts, variants, answers, coverage, accuracy"}}'
        FROM range({RUNS}) t(k)"""),
        ("context versions (temp)", f"""
        CREATE TEMP TABLE ctxv AS
        SELECT c, v, printf('world-%07d', c) AS context_id, text, sha256(text) AS content_hash,
               run_id_of(v * 100 + c % 100) AS run_id,
               (c % {stride} = 0 AND c // {stride} < {E}) AS evaluated,
               (hash(c, 11, {SEED}) % 20) / 100.0 AS difficulty
        FROM (
            SELECT c, v,
                   'Hugo has ' || (10 + hash(c, v, 1) % 90) || ' coins. Jade has ' || (2 + hash(c, v, 2) % 4)
                   || ' times as many coins as Hugo. Sara has twice as many coins as Hugo. Amy has half as many '
                   || 'coins as Sara. Kai has ' || (1 + hash(c, v, 3) % 30) || ' more coins than Sara. Eli has as '
                   || 'many coins as Sara and Hugo together. (world ' || c || ', revision ' || v || ')' AS text
            FROM range({C}) a(c), range({VERSIONS}) b(v)
        )"""),
        ("contexts", f"""
        INSERT INTO contexts
        SELECT context_id, content_hash, 'arithmetic-worlds', text,
               '{{"depth": 2, "index": ' || c || ', "n_entities": 6, "seed": 7, "unit": "coins"}}', false, run_id,
               NULL AS row_hash
        FROM ctxv
        UNION ALL  -- 1% removed from the corpus since: a tombstone on the latest version
        SELECT context_id, content_hash, 'arithmetic-worlds', text, '{{}}', true, run_id_of(200), NULL
        FROM ctxv WHERE v = {VERSIONS - 1} AND c % 100 = 99"""),
        ("query versions (temp)", f"""
        CREATE TEMP TABLE qv AS
        SELECT x.*, 'q_' || left(md5(x.context_id || '|' || x.qtext), 16) AS query_id
        FROM (
            SELECT c, v, qi, context_id, content_hash, run_id, evaluated, difficulty,
                   'How many coins does ' || name_of(qi) || ' have' || CASE WHEN qi >= 6 THEN ' in the end' ELSE '' END
                   || ' (#' || qi || ')?' AS qtext,
                   CASE WHEN hash(c, qi, 7) % 20 = 0 THEN NULL ELSE CAST(10 + hash(c, v, qi) % 500 AS VARCHAR) END AS gold,
                   ['lookup', 'derived', 'sum', 'counterfactual'][qi % 4 + 1] AS kind,
                   [0.97, 0.80, 0.75, 0.65][qi % 4 + 1] AS base
            FROM ctxv, range({QUERIES}) q(qi)
        ) x"""),
        ("queries", """
        INSERT INTO queries SELECT query_id, context_id, content_hash, qtext, gold, kind, run_id FROM qv"""),
        ("variants", f"""
        INSERT INTO variants
        SELECT variant_id_of(content_hash, sb, si), context_id, content_hash, 'reference', sb, si, 'v1',
               repeat(name_of(c + si) || ' has ' || n || ' * 2 = ' || (2 * n) || ' coins.' || chr(10),
                      CAST(greatest(1, ct // 10) AS BIGINT)),
               pt, ct, pt * 0.15e-6 + ct * 0.6e-6, 0.3 + ct * 0.004 * (0.8 + 0.4 * u(c, v, si + 10)), run_id
        FROM (
            SELECT c, v, context_id, content_hash, run_id, sb, si,
                   CAST(cap * (0.6 + 0.4 * u(c, v, length(sb) * 10 + si)) AS BIGINT) AS ct,
                   CAST(200 + hash(c, v, 5) % 50 AS BIGINT) AS pt,
                   10 + hash(c, v, 1) % 90 AS n
            FROM ctxv, (VALUES {slots}) s(sb, si, cap)
        )"""),
        ("answers", f"""
        INSERT INTO answers
        SELECT 'a_' || left(md5(query_id || '|' || content_hash || '|' || coalesce(variant_id, 'none') || '|reference|'
                               || tb || '|v1' || CASE WHEN asi > 0 THEN '|' || asi ELSE '' END), 16),
               query_id, context_id, content_hash, variant_id, sb, 'reference', tb, asi, 'v1',
               CASE WHEN tbi = 0 THEN '' ELSE repeat('so ' || (tbi * 7 + qi) || ' + ' || qi || ' = ' || (tbi * 8 + qi) || '. ',
                                                      CAST(ct // 8 AS BIGINT)) END
               || 'The answer is ' || parsed || '.',
               parsed, ok, pt, ct, pt * 0.15e-6 + ct * 0.6e-6, 0.02 + ct * 0.003, run_id
        FROM (
            SELECT q.*, s.sb, s.asi, s.vsi, b.tb, b.tbi,
                   CASE WHEN s.sb = 'none' THEN NULL ELSE variant_id_of(q.content_hash, s.sb, s.vsi) END AS variant_id,
                   CASE WHEN q.gold IS NULL THEN NULL
                        ELSE u(q.c * 64 + q.v * 32 + q.qi, s.asi * 8 + coalesce(s.vsi, 0) * 4 + length(s.sb), b.tbi) <
                             least(0.995, q.base - q.difficulty + b.gain
                                   + CASE s.sb WHEN 'small' THEN 0.05 WHEN 'medium' THEN 0.10 WHEN 'large' THEN 0.15 ELSE 0 END)
                   END AS ok,
                   CAST(b.tok * CASE s.sb WHEN 'small' THEN 0.9 WHEN 'medium' THEN 0.8 WHEN 'large' THEN 0.7 ELSE 1.0 END
                        * (0.7 + 0.6 * u(q.c * 64 + q.v * 32 + q.qi, s.asi * 8 + coalesce(s.vsi, 0), b.tbi + 100)) AS BIGINT) AS ct,
                   CAST(105 + b.tbi * 2 + CASE WHEN s.sb = 'none' THEN 0 ELSE s.cap * 0.8 END AS BIGINT) AS pt
            FROM (SELECT * FROM qv WHERE evaluated) q,
                 (VALUES {sources}) s(sb, vsi, asi, cap),
                 (VALUES {budgets}) b(tbi, tb, gain, tok)
        ), LATERAL (SELECT CASE WHEN ok IS NOT DISTINCT FROM false THEN CAST(CAST(gold AS INT) + 1 AS VARCHAR)
                                ELSE coalesce(gold, '0') END AS parsed)"""),
        ("failures", f"""
        INSERT INTO failures  -- fixed by a later run: their keys exist
        SELECT 'sleep', variant_id, context_id, 'RateLimitError: retries exhausted', run_id
        FROM variants USING SAMPLE reservoir(1500 ROWS) REPEATABLE ({SEED % 1000});
        INSERT INTO failures
        SELECT 'test', answer_id, context_id, 'Timeout: no reply in 60 s', run_id
        FROM answers USING SAMPLE reservoir(2500 ROWS) REPEATABLE ({SEED % 1000});
        INSERT INTO failures  -- still open
        SELECT CASE WHEN i % 3 = 0 THEN 'sleep' ELSE 'test' END,
               CASE WHEN i % 3 = 0 THEN 'v_' ELSE 'a_' END || left(md5('open' || i), 16),
               printf('world-%07d', hash(i, 3, {SEED}) % {C}), 'APIError: 500 from provider', run_id_of(200 + i % 50)
        FROM range(1000) t(i)"""),
        ("quarantine", f"""
        INSERT INTO quarantine
        SELECT 'data/corpus.jsonl', 'line ' || (i * 37), 'missing field: text', '{{"id": "bad-' || i || '"}}', run_id_of(i % {RUNS})
        FROM range(500) t(i)"""),
        ("query_log", f"""
        INSERT INTO query_log
        SELECT 'req-' || left(md5('req' || i), 20),
               TIMESTAMPTZ '2025-06-01 00:00:00+00' + to_microseconds(CAST(i * (30 * 86400e6 / {max(L, 1)}) AS BIGINT)),
               'tenant-' || (i % 5), 'k_' || (i % 23), context_id, content_hash, kind, sha256('question ' || i), 30 + i % 40,
               CASE WHEN sb = 'none' THEN NULL ELSE variant_id_of(content_hash, sb, 0) END, sb, tb, 'reference',
               scope, scope_value, scope = 'corpus' AND i % 4 = 0, 0.9, 0.9 + u(i, 1, 2) * 0.09, 30 + u(i, 1, 3) * 300,
               300 + i % 500, ct, (300 + i % 500) * 0.15e-6 + ct * 0.6e-6,
               20 + 200 * u(i, 1, 4) * u(i, 1, 5), 15 + 150 * u(i, 1, 4) * u(i, 1, 5), 20 + 100 * u(i, 1, 6),
               CASE WHEN i % 40 = 0 THEN 'failed' ELSE 'answered' END, 1 + CAST(i % 40 = 0 AS INT),
               CASE WHEN i % 40 = 0 THEN 'Timeout' END, 'p_0000000000000000', 'sleeptime-20250601.duckdb',
               'service-' || strftime(TIMESTAMP '2025-06-01' + to_microseconds(CAST(i * (30 * 86400e6 / {max(L, 1)}) AS BIGINT)), '%Y%m%d')
        FROM (
            SELECT i, printf('world-%07d', cc) AS context_id, sha256(
                       'Hugo has ' || (10 + hash(cc, 1, 1) % 90) || ' coins.') AS content_hash,
                   ['lookup', 'derived', 'sum', 'counterfactual'][i % 4 + 1] AS kind,
                   ['none', 'small', 'medium', 'large'][i % 4 + 1] AS sb,
                   ['t0-direct', 't1-brief', 't2-steps', 't3-explain', 't4-check'][i % 5 + 1] AS tb,
                   ['context', 'kind', 'corpus'][i % 3 + 1] AS scope,
                   CASE i % 3 WHEN 0 THEN printf('world-%07d', cc) WHEN 1 THEN 'lookup' ELSE '*' END AS scope_value,
                   CAST(5 + 100 * u(i, 1, 7) AS BIGINT) AS ct
            FROM (SELECT i, hash(i, 2, {SEED}) % {C} AS cc FROM range({L}) t(i))
        )"""),
        ("drop temp", "DROP TABLE qv; DROP TABLE ctxv"),
    ]


# --- phases (each runs in its own subprocess) -----------------------------------------------------------


def phase_generate(args) -> dict:
    import duckdb

    from sleeptime.storage.warehouse import apply_migrations

    s = shape(args.variants, args.answers, args.query_log)
    path = Path(args.db)
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    applied = apply_migrations(con)
    steps = {}
    for label, sql in generate_sql(s):
        t = time.perf_counter()
        con.execute(sql)
        steps[label] = time.perf_counter() - t
    t = time.perf_counter()
    con.execute("CHECKPOINT")
    steps["checkpoint"] = time.perf_counter() - t
    counts = {
        table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("runs", "contexts", "queries", "variants", "answers", "failures", "quarantine", "query_log")
    }
    con.close()
    return {"seconds": time.perf_counter() - t0, "steps": steps, "counts": counts, "migrations": applied,
            "shape": s, "peak_rss_mib": _measure.peak_rss_mib()}


def phase_fit(args) -> dict:
    import duckdb
    import pyarrow as pa

    from sleeptime.config import PolicyConfig, RunConfig
    from sleeptime.policy import PolicySettings
    from sleeptime.policy.store import derive_policy
    from sleeptime.storage.records import SCHEMAS
    from sleeptime.storage.warehouse import connect_read_only

    def derive(path: Path) -> dict:
        con = connect_read_only(path)
        try:
            return derive_policy(con, settings, run_id)
        finally:
            con.close()

    path = Path(args.db)
    run_id = "r20260101T000000000000"
    settings = PolicySettings.from_config(PolicyConfig(), RunConfig().test_budget_order)
    t0 = time.perf_counter()
    derived = derive(path)
    fit_s = time.perf_counter() - t0
    fit_rss = _measure.peak_rss_mib()  # before the breakdown below, which holds its own copies
    rows = derived.get("policies", [])
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        derive(path)
        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    # Where the time goes: the same work again, in its parts.
    from sleeptime.policy import _fit, store

    con = duckdb.connect(str(path), read_only=True)
    t = time.perf_counter()
    stats, labeled, sleep, traffic = store._fit_inputs(con, settings)
    read_s = time.perf_counter() - t
    con.close()
    t = time.perf_counter()
    policy = _fit.fit_policy_from_stats(stats, labeled, sleep, settings, traffic)
    fit_only_s = time.perf_counter() - t
    prepared, prepared_labeled = _fit.prepare_stats(stats), _fit._prepare_labeled(labeled)
    t = time.perf_counter()
    _fit._version(settings, prepared, prepared_labeled, _fit.SleepCosts(sleep).frame, traffic)
    version_s = time.perf_counter() - t
    breakdown = {"read_s": read_s, "fit_policy_s": fit_only_s, "version_s": version_s, "answer_rows": len(stats),
                 "sleep_rows": len(sleep), "same_version": policy.version == (rows[0]["policy_version"] if rows else None)}
    del stats, labeled, sleep, prepared, prepared_labeled, policy
    t = time.perf_counter()
    con = duckdb.connect(str(path))
    if rows:
        con.register("incoming", pa.Table.from_pylist(rows, schema=SCHEMAS["policies"]))
        con.execute("INSERT INTO policies BY NAME SELECT * FROM incoming")
    # Four older versions, so v_policy_current has a history to pick the newest from.
    con.execute(
        "INSERT INTO policies SELECT p.* REPLACE ('p_old' || k AS policy_version, 'r2025010' || k || 'T000000000000' AS run_id) "
        "FROM policies p, range(1, 5) t(k)"
    )
    con.execute("CHECKPOINT")
    policy_rows = con.execute("SELECT count(*) FROM policies").fetchone()[0]
    con.close()
    return {"seconds": fit_s, "append_seconds": time.perf_counter() - t, "rows": len(rows), "policy_rows": policy_rows,
            "version": rows[0]["policy_version"] if rows else None, "peak_rss_mib": fit_rss, **breakdown}


def dashboard_queries(md: Path = DASHBOARDS_MD) -> list[tuple[str, str]]:
    """(section, sql) for every ```sql block of docs/dashboards.md."""
    out, section = [], ""
    text = md.read_text(encoding="utf-8")
    for m in re.finditer(r"^## ([^\n]+)$|^```sql\n(.*?)^```", text, re.S | re.M):
        if m.group(1):
            section = m.group(1).replace("`", "").strip()
        else:
            out.append((section, m.group(2).strip()))
    return out


def _timed(fn, fast_below: float) -> tuple[float, int, object]:
    """(seconds, runs, result): one run; when under fast_below, 3 more and their median."""
    t = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t
    if first >= fast_below:
        return first, 1, result
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), 3, result


def phase_views(args) -> dict:
    import duckdb

    con = duckdb.connect(args.db, read_only=True)
    views = [r[0] for r in con.sql(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND database_name = current_database() ORDER BY view_name"
    ).fetchall()]
    out = {"views": [], "queries": []}
    for view in views:
        count_s, count_runs, n = _timed(lambda: con.sql(f"SELECT count(*) FROM {view}").fetchall()[0][0], args.fast_below)
        fetch_s, fetch_runs, table = _timed(lambda: con.sql(f"SELECT * FROM {view}").to_arrow_table(), args.fast_below)
        out["views"].append({"view": view, "rows": n, "columns": table.num_columns, "count_s": count_s,
                             "count_runs": count_runs, "fetch_s": fetch_s, "fetch_runs": fetch_runs,
                             "arrow_mib": table.nbytes / MIB})
        del table
        print(f"  {view}: {n} rows, count {count_s:.3f} s, fetch {fetch_s:.3f} s", file=sys.stderr, flush=True)
    for section, sql in dashboard_queries():
        secs, runs, table = _timed(lambda: con.sql(sql).to_arrow_table(), args.fast_below)
        out["queries"].append({"section": section, "sql": sql, "rows": table.num_rows, "seconds": secs, "runs": runs})
        print(f"  query on {section}: {secs:.3f} s", file=sys.stderr, flush=True)
    con.close()
    out["peak_rss_mib"] = _measure.peak_rss_mib()
    return out


def phase_lake(args) -> dict:
    raise SystemExit("the Parquet lake and Warehouse.build were retired (DuckLake); use bench/publish_scale.py")
    """Write the warehouse's tables as a Parquet lake, one published=<run_id> folder per run."""
    import duckdb

    from sleeptime.storage.warehouse import KEYS

    lake = Path(args.lake)
    lake.mkdir(parents=True, exist_ok=True)
    src = duckdb.connect(args.db, read_only=True)
    s = shape(args.variants, args.answers, args.query_log)
    limit = s["answers"] if args.lake_answers is None else args.lake_answers
    # A smaller lake keeps whole evaluated contexts: the first N answers by context.
    keep = "" if limit >= s["answers"] else (
        f" WHERE context_id IN (SELECT DISTINCT context_id FROM answers ORDER BY context_id "
        f"LIMIT {max(1, limit // (VERSIONS * QUERIES * ANSWERS_PER_QUERY))})"
    )
    t0 = time.perf_counter()
    rows = {}
    for table in KEYS:
        where = keep if table == "answers" else ""
        n = src.execute(f"SELECT count(*) FROM {table}{where}").fetchone()[0]
        rows[table] = n
        if not n:
            continue
        src.execute(
            f"COPY (SELECT *, run_id AS published FROM {table}{where}) TO '{lake / table}' "
            "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (published), FILENAME_PATTERN 'part-{i}')"
        )
    src.close()
    write_s = time.perf_counter() - t0
    files = list(lake.rglob("*.parquet"))
    return {"seconds": write_s, "rows": rows, "files": len(files), "bytes": sum(f.stat().st_size for f in files),
            "peak_rss_mib": _measure.peak_rss_mib()}


def phase_build(args) -> dict:
    import duckdb

    from sleeptime.storage import Lake
    from sleeptime.storage.warehouse import Warehouse

    wh = Warehouse(Path(args.lake).parent / "built" / "sleeptime.duckdb")
    t0 = time.perf_counter()
    snap = wh.build(Lake(args.lake))
    secs = time.perf_counter() - t0
    size = snap.path.stat().st_size
    con = duckdb.connect(str(snap.path), read_only=True)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("contexts", "variants", "answers")}
    con.close()
    wh.discard(snap)
    return {"seconds": secs, "bytes": size, "files": len(snap.files), "counts": counts, "peak_rss_mib": _measure.peak_rss_mib()}


def phase_gate(args) -> dict:
    """The publish step's quality gate (great-expectations) on the generated warehouse."""
    from sleeptime.config import DEFAULT_SLEEP_BUDGETS, RunConfig
    from sleeptime.quality.snapshot import gate_snapshot

    samples = {name: sum(1 for b, _, _ in VARIANT_SLOTS if b == name) for name, _, _ in VARIANT_SLOTS}
    budgets = [b.model_copy(update={"samples": samples.get(b.name, 1)}) for b in DEFAULT_SLEEP_BUDGETS]
    config = RunConfig(sleep_budgets=budgets, output_dir=Path(args.db).parent)
    t = time.perf_counter()
    ok, report = gate_snapshot(Path(args.db), config)
    return {"seconds": time.perf_counter() - t, "ok": ok, "report": report[:300], "peak_rss_mib": _measure.peak_rss_mib()}


PHASES = {"gate": phase_gate, "generate": phase_generate, "fit": phase_fit, "views": phase_views, "lake": phase_lake, "build": phase_build}


def wait_quiet(max_wait: float, below: float = 0.3) -> float:
    """Wait up to max_wait seconds for other processes to use less than ``below`` cores (3 s windows);
    returns the load of the last window."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = _measure.machine_busy_s(), time.monotonic()
        time.sleep(3)
        load = (_measure.machine_busy_s() - b0) / (time.monotonic() - t0)
        if load < below or time.monotonic() >= deadline:
            return load
        print(f"  waiting for a quieter machine (other load {load:.2f} cores)", file=sys.stderr, flush=True)


def run_phase(name: str, args, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--db", str(args.db), "--lake", str(args.lake),
           "--variants", str(args.variants), "--answers", str(args.answers), "--query-log", str(args.query_log),
           "--fast-below", str(args.fast_below)]
    if args.lake_answers is not None:
        cmd += ["--lake-answers", str(args.lake_answers)]
    if args.profile:
        cmd += ["--profile"]
    if args.max_wait:
        t = time.perf_counter()
        wait_quiet(args.max_wait)
        args.waited += time.perf_counter() - t
    busy, own, t = _measure.machine_busy_s(), _measure.children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd + (extra or []), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    other = max(0.0, ((_measure.machine_busy_s() - busy) - (_measure.children_cpu_s() - own)) / wall)
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed with exit code {proc.returncode}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result["wall_s"] = wall
    result["other_load"] = other
    result["cpu_s"] = _measure.children_cpu_s() - own
    print(f"{name}: {wall:.1f} s wall, other processes used {other:.2f} cores meanwhile", file=sys.stderr, flush=True)
    return result


# --- report ------------------------------------------------------------------------------------------------


def _machine() -> list[str]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    return [
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- cores: {os.cpu_count()} ({_measure.cpu_model() or 'unknown CPU'}); "
        f"RAM: {_measure.memory_total_bytes() / 1024 ** 3:.1f} GiB",
        f"- python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- duckdb {version('duckdb')}, pandas {version('pandas')}, numpy {version('numpy')}, pyarrow {version('pyarrow')}",
        f"- load average when the benchmark started: {_measure.loadavg_text()}",
    ]


def _fmt_s(x: float, runs: int = 1) -> str:
    txt = f"{x:.3f}" if x < 10 else f"{x:.1f}"
    return txt if runs > 1 else txt + "¹"


def _step(name: str, r: dict, seconds: float, notes: str) -> str:
    return (f"| {name} | {seconds:.1f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:,.0f} | "
            f"{r['other_load']:.2f} | {notes} |")


def render(res: dict) -> str:
    gen, fit, views, lake, build = res["generate"], res["fit"], res["views"], res.get("lake"), res.get("build")
    s, c = gen["shape"], gen["counts"]
    lines = [
        "# Warehouse at scale: dashboard views, policy fit, size on disk",
        "",
        f"Produced by `{res['command']}` (one command; the script writes this file, prose included: the "
        "*Findings* are its `FINDINGS`, written after reading the figures).",
        "",
        "## Machine",
        "",
        *res["machine"],
        f"- benchmark total: {res['total_s']:.0f} s (wall, generation included"
        + (f"; of which {res['waited_s']:.0f} s waiting for other load to settle, `--max-wait`)" if res.get("waited_s") else ")"),
        "",
        "## Data",
        "",
        f"Generated in SQL (no model), shaped like the pipeline's rows: {s['contexts']:,} contexts x {VERSIONS} versions "
        f"(every text changed once, so half of every table is history; 1% of the contexts removed since), {QUERIES} "
        f"queries per context version (5% without a gold answer), sleep budgets none / small (1 sample) / medium (2) / "
        f"large (2), 5 test budgets, pass@{PASS_AT_K}; test-time answers on the full grid ({ANSWERS_PER_QUERY} per "
        f"query: raw context and each of the 5 variants x 5 test budgets, plus 2 extra raw samples per test budget) "
        f"for {s['evaluated']:,} evaluated contexts, both versions. Half of the answers and variants are current.",
        "",
        "| table | rows |",
        "|---|---:|",
        *[f"| {t} | {n:,} |" for t, n in c.items()],
        f"| policies (the fitted version + 4 older copies) | {fit['policy_rows']:,} |",
        "",
        "## Steps",
        "",
        "Each step ran in its own subprocess. `seconds` is the step itself; `wall` is the subprocess (interpreter and "
        "imports included); `CPU` is the subprocess's user + system time (both cores count, so CPU can exceed wall); "
        "peak RSS is its `ru_maxrss`; `other load` is the mean number of cores that processes outside the benchmark "
        "used meanwhile (the machine is shared: figures taken under load are slower than the machine can do).",
        "",
        "| step | seconds | wall s | CPU s | peak RSS MiB | other load (cores) | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
        _step("generate: migrations + INSERT ... SELECT + CHECKPOINT", gen, gen["seconds"],
              ", ".join(f"{k} {v:.1f} s" for k, v in gen["steps"].items() if v >= 0.5)),
        _step("policy fit: `derive_policy(candidate, ...)`, as the publish step calls it", fit, fit["seconds"],
              f"{fit['rows']:,} policy rows, version {fit['version']}; peak RSS is the fit's alone. Parts, measured "
              f"again after it: reading {fit['answer_rows']:,} answer-summary rows + {fit['sleep_rows']:,} sleep rows "
              f"{fit['read_s']:.1f} s, `fit_policy` {fit['fit_policy_s']:.1f} s, of which the version digest "
              f"{fit['version_s']:.1f} s"),
    ]
    gate = res.get("gate")
    if gate:
        lines.append(_step("quality gate: `gate_snapshot(candidate, config)`, as the publish step calls it", gate,
                           gate["seconds"], f"{'passed' if gate['ok'] else 'refused'}"))
    if lake:
        lines += [
            _step("write the lake: COPY ... (FORMAT parquet, COMPRESSION zstd, PARTITION_BY published)", lake,
                  lake["seconds"], f"{lake['files']:,} files, {lake['bytes'] / MIB:,.0f} MiB, "
                  f"{lake['rows']['answers']:,} answers (setup, not a product cost)"),
            _step("`Warehouse.build(lake)`: the rebuild every publish does", build, build["seconds"],
                  f"built file {build['bytes'] / MIB:,.0f} MiB; {build['counts']['answers']:,} answers, "
                  f"{build['counts']['variants']:,} variants"),
        ]
    lines += [
        "",
        f"Size on disk of the generated warehouse file: **{res['size_bytes'] / MIB:,.0f} MiB** (after CHECKPOINT, "
        "policies included)" + (f"; the same data as a Parquet lake: {lake['bytes'] / MIB:,.0f} MiB; the file "
                                f"`Warehouse.build` makes from it: {build['bytes'] / MIB:,.0f} MiB." if lake else "."),
        "",
        "## Views",
        "",
        "A read-only connection, as a dashboard opens the published file. `count` is `SELECT count(*) FROM view`; "
        "`fetch` is `SELECT * FROM view` fetched whole as an Arrow table (`con.sql(...).to_arrow_table()`). "
        f"Figures are the median of 3 runs after a first run, except those marked ¹: the first run took over "
        f"{res['fast_below']:g} s and is the figure. Every view of the schema is listed (read from "
        f"`duckdb_views()`). Other load during this step: {views['other_load']:.2f} cores.",
        "",
        "| view | rows | count s | fetch s | fetched MiB |",
        "|---|---:|---:|---:|---:|",
        *[f"| {v['view']} | {v['rows']:,} | {_fmt_s(v['count_s'], v['count_runs'])} | {_fmt_s(v['fetch_s'], v['fetch_runs'])} | "
          f"{v['arrow_mib']:,.1f} |" for v in views["views"]],
        "",
        "## docs/dashboards.md queries",
        "",
        "Every ```sql block of docs/dashboards.md, run as written, result fetched whole.",
        "",
        "| section | query | rows | seconds |",
        "|---|---|---:|---:|",
        *[f"| {q['section']} | `{' '.join(q['sql'].split())[:100]}{'…' if len(' '.join(q['sql'].split())) > 100 else ''}` | "
          f"{q['rows']:,} | {_fmt_s(q['seconds'], q['runs'])} |" for q in views["queries"]],
        "",
        f"Peak RSS of the views process: {views['peak_rss_mib']:,.0f} MiB.",
        "",
    ]
    if FINDINGS.strip():
        lines += ["## Findings", "", FINDINGS.strip(), ""]
    return "\n".join(lines)


FINDINGS = """
Figures from a shared 2-core VM: other sessions used 0.5 to 1 core during the run above (column `other load`),
so wall times are somewhat slower than the machine can do; CPU seconds are the steadier measure. An earlier run of
the same command while other sessions kept 1.5 cores busy took 927 s in all (generation 182 s, fit 33 s, views
104 s, lake 130 s, build 120 s), so on a busy machine expect 2 to 3 times the figures above. The run above spent
256 s working (its total less the time `--max-wait` spent waiting for the other load to settle).

**Policy fit: was 54 s and 5.8 GiB, now 14 s and 3.1 GiB (fixed).** Same file, the code before and after the
change run back to back, one core of other load: before 53.9 s wall, 53.1 CPU s, peak RSS 5,805 MiB; after
13.7 s, 13.6 CPU s, 3,116 MiB; the same policy version (`p_73796071c256d12d`) and the same table. Where the
time went (cProfile of the old path, which inflates it to 79 s): `_version` 42 s, of which `DataFrame.to_csv` 37 s (pandas formats every
float with `%.10g` in Python: 7.7M calls); `load_frames` 23 s, because it loads what the fit never uses (the text
of every current variant, every query, the pass@k samples) and converts strings to pandas through Python objects;
the kinds of each context, a Python lambda per context group, 9 s. Changes: `sleeptime/policy/store.py` reads
only the 8 columns the fit uses, `sample_index = 0` filtered in SQL, through Arrow (`to_arrow_table().to_pandas()`,
twice as fast as `.df()` here), on its own cursor; `sleeptime/policy/_fit.py` computes the digest from the same
bytes without `to_csv` (columns factorized and lexsorted as `sort_values` does, each distinct value formatted once,
Arrow joins the lines; frames that would need CSV quoting, NaN or -0.0 keep the pandas path), so published
versions do not change; the kinds per context and two row loops are vectorized. What is left at 10M answers:
reading the 3.6M graded current answers (a join of `answers_current` with `queries_current`) 4.2 s, `fit_policy`
7.0 s of which the digest 3.9 s. The query service and `sleeptime` CLI refit through the same function
(`load_current_policy`), so a snapshot reload at this size gains the same.

**`failures_open`: 3x less CPU (fixed).** `key NOT IN (SELECT answer_id FROM answers)` made DuckDB build a hash
table of all 10M answer ids (a MARK join: 1.9 s in `EXPLAIN ANALYZE`). With `NOT EXISTS` (and `key IS NOT NULL`,
which keeps the NOT IN result for NULL keys) it builds on the few thousand failures and streams the answer ids
past them: 1.6-2.1 CPU s per query before, 0.5-0.8 after, the same rows (`warehouse/migrations/002_views.sql`).

**`v_pass_at_k` is the one view at about 2 s (explained, not changed).** `EXPLAIN ANALYZE`: 2.36 s, of which
1.72 s is the hash aggregate with one group per (test model, test budget, k, query): each of the 1.9M graded
raw-context answers is joined to every k above its sample index (3.6M rows), giving 1.8M groups. It grows with the
number of raw pass@k answers. A rewrite that groups per query once and evaluates every k on lists gave the same
15 rows with 25% less CPU; not adopted, as it is much harder to read for that gain. If it matters, compute it once
at publish time into a table.

**`answers_current` fetched whole: 2.4 s for 5M rows (1.8 GiB of Arrow).** That is the cost of moving the rows,
not of the view (`count(*)` 0.5 s); the documented dashboard query on it aggregates and takes 0.5 s. The other
aggregate views read `answers_current` (a window over contexts for the current version and a semi-join with the
current variants) and take 0.6 to 1.6 s.

**Publish cost grows with history (explained).** Every publish rebuilds the warehouse from the whole lake: 54 s and
3.4 GiB here for 10M answers, 1M variants, 2M queries. Per table (a separate run on the same lake): answers 24 s
(35 CPU s), variants 6.8 s, queries 5.3 s, the rest under 1.5 s each. Deduplication is not the cost: the
`QUALIFY row_number()` window adds about 20% over a plain `INSERT ... SELECT` of the same files (5.7 vs 4.7 CPU s per
million answers); the rest is decoding Parquet and compressing into DuckDB. So a publish pays about 2.5 s per
million answers of history whatever the run changed; bounding that needs an incremental build (start from the
previous snapshot, load only the new `published=` folders), a design change rather than a local fix.

**The quality gate is the largest publish cost at this size (measured smaller; not changed: `sleeptime/quality` is
outside this benchmark's files).** `--gate` times `gate_snapshot` as publish calls it. At 1M answers and 50k current
variants: 45.7 s (51 CPU s, 1.3 GiB); with twice the variants 90.8 s, with twice the answers 58.8 s: about 0.9 ms per
current variant plus 13 s per million answers, so roughly 10 minutes for the warehouse above (extrapolated; not run,
it would not fit the 10-minute budget). py-spy: 40% of the samples are great-expectations resolving expectation
configurations, whose `value_set`s hold every current context hash, (context, hash) pair and variant id: GX copies
them through pydantic `.dict()` on each access; `ColumnPairValuesInSet` walks the frame with `DataFrame.iterrows`;
and the gate first loads `SELECT *` of `answers_current` into pandas. The referential checks (every answer names a
current variant, every variant a current context) are anti-joins DuckDB answers in well under a second at this size;
passing GX their counts instead of the id sets would remove the part that grows with the corpus.

**Size.** 857 MiB for the DuckDB file; 298 MiB for the same rows as a zstd Parquet lake; the file a build makes from
that lake is 936 MiB. The lake write (benchmark setup, not a product step) peaks at 7.2 GiB RSS: DuckDB buffers every
open `PARTITION_BY` partition.
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", type=int, default=1_000_000)
    p.add_argument("--answers", type=int, default=10_000_000)
    p.add_argument("--query-log", type=int, default=100_000)
    p.add_argument("--lake-answers", type=int, default=0,
                   help="answers in the lake for the build step (default: all; 0 skips the step)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--no-write-results", action="store_true")
    p.add_argument("--render-from", type=Path, help="render the report again from a results.json, run nothing")
    p.add_argument("--fast-below", type=float, default=2.0, help="seconds under which a figure is a median of 3")
    p.add_argument("--clean", action="store_true", help="remove the generated files at the end")
    p.add_argument("--max-wait", type=float, default=0.0,
                   help="before each step, wait up to this many seconds for other load to fall below 0.3 cores")
    p.add_argument("--profile", action="store_true", help="also cProfile the policy fit (to stderr)")
    p.add_argument("--gate", action="store_true",
                   help="also time the publish step's quality gate (gate_snapshot) on the generated warehouse "
                        "(slow: about a minute per million answers)")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--lake", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.phase:
        print("RESULT " + json.dumps(PHASES[args.phase](args)), flush=True)
        return
    if args.render_from:
        res = json.loads(args.render_from.read_text(encoding="utf-8"))
    else:
        res = run_all(args)
    report = render(res)
    print(report)
    if not args.no_write_results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report, encoding="utf-8")
        print(f"wrote {args.results}", file=sys.stderr)


def run_all(args) -> dict:
    res = {"machine": _machine(), "fast_below": args.fast_below,
           "command": " ".join([".venv/bin/python", "bench/warehouse_scale.py", *sys.argv[1:]])}
    t0 = time.perf_counter()
    args.waited = 0.0
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    args.db = out / "warehouse.duckdb"
    args.lake = out / "lake"
    s = shape(args.variants, args.answers, args.query_log)
    print(f"generating {s['variants']:,} variants, {s['answers']:,} answers into {args.db}", file=sys.stderr, flush=True)
    res["generate"] = run_phase("generate", args)
    res["fit"] = run_phase("fit", args)
    res["size_bytes"] = args.db.stat().st_size + sum(p.stat().st_size for p in out.glob("warehouse.duckdb.wal"))
    res["views"] = run_phase("views", args)
    if args.gate:
        res["gate"] = run_phase("gate", args)
    if args.lake_answers != 0:
        res["lake"] = run_phase("lake", args)
        res["build"] = run_phase("build", args)
    res["total_s"] = time.perf_counter() - t0
    res["waited_s"] = args.waited
    (out / "results.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    print(f"results kept in {out / 'results.json'} (--render-from renders them again)", file=sys.stderr)
    if args.clean:
        for path in out.iterdir():
            if path.name != "results.json":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return res


if __name__ == "__main__":
    main()
