-- The warehouse is updated from the lake's commits instead of rebuilt (sleeptime/storage/warehouse.py).

-- Which lake snapshot this file reflects, and how many rows the last update applied per table.
CREATE TABLE build_info (
    built_at          TIMESTAMPTZ,
    lake_snapshot     BIGINT,
    rows_applied_json VARCHAR
);

-- sha256 of the corpus record a context version came from (JSONL line); lets ingest skip
-- unchanged lines without parsing them.
ALTER TABLE contexts ADD COLUMN row_hash VARCHAR;

-- contexts_current selected its columns by name; keep it, with the new column.
CREATE OR REPLACE VIEW contexts_current AS
SELECT context_id, content_hash, source, text, metadata_json, run_id, row_hash
FROM (
    SELECT *, row_number() OVER (PARTITION BY context_id ORDER BY run_id DESC, deleted DESC) AS rn
    FROM contexts
)
WHERE rn = 1 AND NOT deleted;

-- pass@k without joining every answer to every k: one pass over the raw-context answers collects,
-- per query and test budget, the sample indexes in order; each k then reads a prefix of them.
-- (The join version took 2.1 s at 10M answers, bench/results/warehouse_scale.md.)
CREATE OR REPLACE VIEW v_pass_at_k AS
WITH per_query AS (
    SELECT a.test_model, a.test_budget, a.query_id,
           list(a.correct ORDER BY a.sample_index) AS correct,
           list(a.completion_tokens ORDER BY a.sample_index) AS tokens,
           list(a.sample_index ORDER BY a.sample_index) AS samples
    FROM answers_current a
    WHERE a.variant_id IS NULL AND a.correct IS NOT NULL
    GROUP BY ALL
),
ks AS (SELECT DISTINCT sample_index + 1 AS k FROM answers_current WHERE variant_id IS NULL)
SELECT p.test_model, p.test_budget, ks.k, count(*) AS n,
       avg(CASE WHEN list_bool_or(p.correct[1:ks.k]) THEN 1.0 ELSE 0.0 END) AS pass_at_k,
       avg(list_sum(p.tokens[1:ks.k])) AS mean_test_completion_tokens
FROM per_query p JOIN ks ON len(p.samples) >= ks.k AND p.samples[ks.k] = ks.k - 1
GROUP BY ALL;
