-- Per-context summaries kept up to date by every publish (sleeptime/storage/summaries.py holds the
-- SQL that fills them; a publish recomputes the rows of the contexts it touched). The aggregate
-- views below read them instead of every current answer: at 10M answers they took 1-6 s, the
-- summaries answer in milliseconds. A file migrated from 006 is filled in full by the same publish.

CREATE TABLE summary_sleep (
    context_id        VARCHAR,
    sleep_budget      VARCHAR,
    variants          BIGINT,
    completion_tokens BIGINT,
    cost_usd          DOUBLE
);

CREATE TABLE summary_answers (
    context_id        VARCHAR,
    kind              VARCHAR,   -- the query's kind; NULL when the answer's query has no current row
    test_model        VARCHAR,
    sleep_budget      VARCHAR,
    test_budget       VARCHAR,
    graded            BOOLEAN,   -- correct IS NOT NULL
    answers           BIGINT,    -- first-sample answers (sample_index 0)
    correct           BIGINT,
    completion_tokens BIGINT,
    completion_n      BIGINT,
    prompt_tokens     BIGINT,
    prompt_n          BIGINT,
    cost_usd          DOUBLE,
    latency_s         DOUBLE,
    latency_n         BIGINT
);

CREATE TABLE summary_labeled (
    context_id VARCHAR,
    kind       VARCHAR,
    queries    BIGINT
);

CREATE TABLE summary_pass_at_k (
    context_id  VARCHAR,
    test_model  VARCHAR,
    test_budget VARCHAR,
    k           INTEGER,
    queries     BIGINT,    -- queries with samples 0..k-1 all graded
    passed      BIGINT,    -- of which any sample is correct
    tokens      BIGINT,    -- their completion tokens over the k samples
    tokens_n    BIGINT
);

-- Same columns, types and rows as the definitions in 002_views.sql.
CREATE OR REPLACE VIEW v_accuracy_by_budget AS
WITH sleep AS (
    SELECT sleep_budget, avg(completion_tokens) AS mean_sleep_tokens_per_context
    FROM summary_sleep GROUP BY ALL
)
SELECT a.test_model, a.sleep_budget, a.test_budget,
       CAST(sum(a.answers) AS BIGINT) AS n,
       CAST(sum(a.correct) AS DOUBLE) / sum(a.answers) AS accuracy,
       CAST(sum(a.completion_tokens) AS DOUBLE) / nullif(sum(a.completion_n), 0) AS mean_test_completion_tokens,
       CAST(sum(a.prompt_tokens) AS DOUBLE) / nullif(sum(a.prompt_n), 0) AS mean_test_prompt_tokens,
       coalesce(s.mean_sleep_tokens_per_context, 0) AS mean_sleep_tokens_per_context
FROM summary_answers a
LEFT JOIN sleep s ON s.sleep_budget = a.sleep_budget
WHERE a.graded
GROUP BY a.test_model, a.sleep_budget, a.test_budget, s.mean_sleep_tokens_per_context;

CREATE OR REPLACE VIEW v_cost_per_query AS
WITH per_context AS (
    SELECT context_id, sleep_budget, test_budget, test_model,
           sum(answers) AS queries, sum(completion_tokens) AS test_tokens, sum(cost_usd) AS test_cost_usd
    FROM summary_answers GROUP BY ALL
)
SELECT p.test_model, p.sleep_budget, p.test_budget,
       avg(p.queries) AS queries_per_context,
       avg((coalesce(s.completion_tokens, 0) + 10 * p.test_tokens) / p.queries) AS weighted_tokens_per_query,
       avg((coalesce(s.cost_usd, 0) + p.test_cost_usd) / p.queries) AS usd_per_query
FROM per_context p
LEFT JOIN summary_sleep s ON s.context_id = p.context_id AND s.sleep_budget = p.sleep_budget
GROUP BY ALL;

CREATE OR REPLACE VIEW v_pass_at_k AS
SELECT test_model, test_budget, k,
       CAST(sum(queries) AS BIGINT) AS n,
       CAST(sum(passed) AS DOUBLE) / sum(queries) AS pass_at_k,
       CAST(sum(tokens) AS DOUBLE) / nullif(sum(tokens_n), 0) AS mean_test_completion_tokens
FROM summary_pass_at_k
GROUP BY ALL;
