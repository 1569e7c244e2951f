-- The query service's log (sleeptime/service/querylog.py): one row per query the service handled,
-- appended in batches to lake/query_log/published=service-<YYYYMMDD>/. No question text and no key
-- material: the question's sha256 and length only, and the id (not the secret) of the API key.

-- key: request_id
CREATE TABLE query_log (
    request_id               VARCHAR NOT NULL,
    received_at              TIMESTAMPTZ NOT NULL,
    tenant                   VARCHAR,
    key_id                   VARCHAR,            -- NULL when the service ran without auth
    context_id               VARCHAR NOT NULL,
    context_hash             VARCHAR,
    kind                     VARCHAR,            -- query kind used for selection; NULL: none
    question_sha256          VARCHAR,
    question_chars           INTEGER,
    variant_id               VARCHAR,            -- NULL: raw context (or the query failed)
    sleep_budget             VARCHAR,
    test_budget              VARCHAR,
    test_model               VARCHAR,
    scope                    VARCHAR,            -- context | kind | corpus
    scope_value              VARCHAR,
    fallback                 BOOLEAN,
    target_accuracy          DOUBLE,
    predicted_accuracy       DOUBLE,
    predicted_cost_weighted  DOUBLE,
    prompt_tokens            BIGINT,
    completion_tokens        BIGINT,
    cost_usd                 DOUBLE,
    latency_ms               DOUBLE,
    model_latency_ms         DOUBLE,
    selection_us             DOUBLE,
    status                   VARCHAR NOT NULL,   -- answered | failed
    attempts                 INTEGER,
    error                    VARCHAR,
    policy_version           VARCHAR,
    snapshot                 VARCHAR,
    run_id                   VARCHAR NOT NULL    -- service-<YYYYMMDD>
);

-- Traffic per day and tenant.
CREATE VIEW v_service_traffic AS
SELECT CAST(received_at AS DATE) AS day, tenant,
       count(*) AS queries,
       count(*) FILTER (WHERE status = 'answered') AS answered,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       avg(CASE WHEN fallback THEN 1.0 ELSE 0.0 END) AS fallback_rate,
       quantile_cont(latency_ms, 0.5) AS p50_latency_ms,
       quantile_cont(latency_ms, 0.99) AS p99_latency_ms,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd
FROM query_log GROUP BY ALL;

-- What the policy picked on real traffic, per (sleep budget, test budget) actually answered.
CREATE VIEW v_service_choices AS
SELECT sleep_budget, test_budget, count(*) AS queries,
       avg(predicted_accuracy) AS mean_predicted_accuracy,
       avg(completion_tokens) AS mean_test_tokens,
       avg(latency_ms) AS mean_latency_ms,
       sum(cost_usd) AS cost_usd
FROM query_log WHERE status = 'answered' GROUP BY ALL;

-- Amortization on real traffic: per current context, the queries served and the sleep-time
-- tokens its current variants cost (paid once), so sleep tokens per served query falls as
-- traffic grows.
CREATE VIEW v_service_amortization AS
WITH served AS (
    SELECT context_id, count(*) AS queries, sum(completion_tokens) AS test_tokens,
           sum(cost_usd) AS test_cost_usd
    FROM query_log WHERE status = 'answered' GROUP BY ALL
),
sleep AS (
    SELECT context_id, sum(completion_tokens) AS sleep_tokens, sum(cost_usd) AS sleep_cost_usd
    FROM variants_current GROUP BY ALL
)
SELECT s.context_id, s.queries, s.test_tokens,
       coalesce(v.sleep_tokens, 0) AS sleep_tokens,
       coalesce(v.sleep_tokens, 0) / s.queries AS sleep_tokens_per_query,
       (coalesce(v.sleep_tokens, 0) + 10 * s.test_tokens) / s.queries AS weighted_tokens_per_query,
       (coalesce(v.sleep_cost_usd, 0) + s.test_cost_usd) / s.queries AS usd_per_query
FROM served s LEFT JOIN sleep v ON v.context_id = s.context_id;
