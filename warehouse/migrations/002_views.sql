-- Views for dashboards and for the pipeline's own diff. docs/dashboards.md lists their columns.

-- The state of every context now: its latest row, unless that row is a tombstone.
CREATE VIEW contexts_current AS
SELECT context_id, content_hash, source, text, metadata_json, run_id
FROM (
    SELECT *, row_number() OVER (PARTITION BY context_id ORDER BY run_id DESC, deleted DESC) AS rn
    FROM contexts
)
WHERE rn = 1 AND NOT deleted;

CREATE VIEW queries_current AS
SELECT q.*
FROM queries q
JOIN contexts_current c ON q.context_id = c.context_id AND q.context_hash = c.content_hash;

-- Every variant ever made; superseded ones belong to an older version of their context.
CREATE VIEW v_variant_catalog AS
SELECT v.variant_id, v.context_id, v.context_hash, v.model, v.sleep_budget, v.sample_index,
       v.prompt_version, v.prompt_tokens, v.completion_tokens, v.cost_usd, v.latency_s, v.run_id,
       length(v.text) AS text_chars,
       c.context_id IS NULL AS superseded
FROM variants v
LEFT JOIN contexts_current c ON v.context_id = c.context_id AND v.context_hash = c.content_hash;

CREATE VIEW variants_current AS
SELECT v.* FROM variants v
JOIN contexts_current c ON v.context_id = c.context_id AND v.context_hash = c.content_hash;

CREATE VIEW answers_current AS
SELECT a.* FROM answers a
JOIN contexts_current c ON a.context_id = c.context_id AND a.context_hash = c.content_hash
WHERE a.variant_id IS NULL OR a.variant_id IN (SELECT variant_id FROM variants_current);

-- Accuracy and tokens per (test model, sleep budget, test budget), current data only.
CREATE VIEW v_accuracy_by_budget AS
WITH sleep AS (
    SELECT sleep_budget, avg(tokens) AS mean_sleep_tokens_per_context
    FROM (SELECT sleep_budget, context_id, sum(completion_tokens) AS tokens
          FROM variants_current GROUP BY ALL)
    GROUP BY ALL
)
SELECT a.test_model, a.sleep_budget, a.test_budget,
       count(*) AS n,
       avg(CASE WHEN a.correct THEN 1.0 ELSE 0.0 END) AS accuracy,
       avg(a.completion_tokens) AS mean_test_completion_tokens,
       avg(a.prompt_tokens) AS mean_test_prompt_tokens,
       coalesce(s.mean_sleep_tokens_per_context, 0) AS mean_sleep_tokens_per_context
FROM answers_current a
LEFT JOIN sleep s ON s.sleep_budget = a.sleep_budget
WHERE a.correct IS NOT NULL AND a.sample_index = 0
GROUP BY a.test_model, a.sleep_budget, a.test_budget, s.mean_sleep_tokens_per_context;

-- Amortized cost per query, as published: (sleep tokens + t * sum of test tokens) / queries,
-- with test-time tokens weighted t = 10; and in USD. One row per budget pair, averaged over contexts.
CREATE VIEW v_cost_per_query AS
WITH per_context AS (
    SELECT a.context_id, a.sleep_budget, a.test_budget, a.test_model,
           count(*) AS queries,
           sum(a.completion_tokens) AS test_tokens,
           sum(a.cost_usd) AS test_cost_usd
    FROM answers_current a
    WHERE a.sample_index = 0
    GROUP BY ALL
),
sleep AS (
    SELECT context_id, sleep_budget, sum(completion_tokens) AS sleep_tokens, sum(cost_usd) AS sleep_cost_usd
    FROM variants_current GROUP BY ALL
)
SELECT p.test_model, p.sleep_budget, p.test_budget,
       avg(p.queries) AS queries_per_context,
       avg((coalesce(s.sleep_tokens, 0) + 10 * p.test_tokens) / p.queries) AS weighted_tokens_per_query,
       avg((coalesce(s.sleep_cost_usd, 0) + p.test_cost_usd) / p.queries) AS usd_per_query
FROM per_context p
LEFT JOIN sleep s ON s.context_id = p.context_id AND s.sleep_budget = p.sleep_budget
GROUP BY ALL;

-- The pass@k baseline (parallel test-time scaling, oracle verifier, as published): raw context,
-- k independent samples per query, correct when any of them is; tokens are the sum over samples.
CREATE VIEW v_pass_at_k AS
WITH ks AS (SELECT DISTINCT sample_index + 1 AS k FROM answers_current WHERE variant_id IS NULL),
per_query AS (
    SELECT a.test_model, a.test_budget, ks.k, a.query_id,
           bool_or(a.correct) AS any_correct,
           sum(a.completion_tokens) AS tokens
    FROM answers_current a JOIN ks ON a.sample_index < ks.k
    WHERE a.variant_id IS NULL AND a.correct IS NOT NULL
    GROUP BY ALL
    HAVING count(*) = ks.k
)
SELECT test_model, test_budget, k, count(*) AS n,
       avg(CASE WHEN any_correct THEN 1.0 ELSE 0.0 END) AS pass_at_k,
       avg(tokens) AS mean_test_completion_tokens
FROM per_query GROUP BY ALL;

CREATE VIEW v_run_history AS
SELECT * FROM runs ORDER BY run_id;

-- Failed work items that no later run has fixed.
-- NOT EXISTS, not NOT IN: the same rows (the keys it looks up are never NULL), but DuckDB probes the
-- few failures with the ids of answers instead of building a hash table of every answer_id (3x less
-- CPU at 10M answers, bench/warehouse_scale.py).
CREATE VIEW failures_open AS
SELECT f.* EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY stage, key ORDER BY run_id DESC) AS rn FROM failures
) f
WHERE f.rn = 1
  AND f.key IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM variants v WHERE v.variant_id = f.key)
  AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.answer_id = f.key);
