-- Base tables. Rows are loaded from the Parquet lake by sleeptime/storage/warehouse.py,
-- deduplicated by the key named above each table.

-- key: run_id
CREATE TABLE runs (
    run_id              VARCHAR NOT NULL,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    status              VARCHAR NOT NULL,   -- published | rejected | failed
    corpus              VARCHAR,
    contexts_new        BIGINT,
    contexts_changed    BIGINT,
    contexts_unchanged  BIGINT,
    contexts_removed    BIGINT,
    variants_written    BIGINT,
    answers_written     BIGINT,
    model_calls         BIGINT,
    prompt_tokens       BIGINT,
    completion_tokens   BIGINT,
    cost_usd            DOUBLE,
    failures            BIGINT,
    quarantined         BIGINT,
    seconds             DOUBLE,
    detail_json         VARCHAR
);

-- key: (context_id, content_hash, deleted); the latest run_id per context_id is its state
CREATE TABLE contexts (
    context_id     VARCHAR NOT NULL,
    content_hash   VARCHAR NOT NULL,
    source         VARCHAR,
    text           VARCHAR NOT NULL,
    metadata_json  VARCHAR,
    deleted        BOOLEAN NOT NULL,
    run_id         VARCHAR NOT NULL
);

-- key: (query_id, context_hash)
CREATE TABLE queries (
    query_id      VARCHAR NOT NULL,
    context_id    VARCHAR NOT NULL,
    context_hash  VARCHAR NOT NULL,
    text          VARCHAR NOT NULL,
    gold_answer   VARCHAR,
    kind          VARCHAR,
    run_id        VARCHAR NOT NULL
);

-- key: variant_id = hash(context_hash, model, sleep_budget, sample_index, prompt_version)
CREATE TABLE variants (
    variant_id         VARCHAR NOT NULL,
    context_id         VARCHAR NOT NULL,
    context_hash       VARCHAR NOT NULL,
    model              VARCHAR NOT NULL,
    sleep_budget       VARCHAR NOT NULL,
    sample_index       INTEGER NOT NULL,
    prompt_version     VARCHAR NOT NULL,
    text               VARCHAR,
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    cost_usd           DOUBLE,
    latency_s          DOUBLE,
    run_id             VARCHAR NOT NULL
);

-- key: answer_id = hash(query_id, context_hash, variant_id or none, test_model, test_budget, prompt_version[, sample_index])
CREATE TABLE answers (
    answer_id          VARCHAR NOT NULL,
    query_id           VARCHAR NOT NULL,
    context_id         VARCHAR NOT NULL,
    context_hash       VARCHAR NOT NULL,
    variant_id         VARCHAR,            -- NULL: test-time only, raw context
    sleep_budget       VARCHAR NOT NULL,   -- 'none' for the raw context
    test_model         VARCHAR NOT NULL,
    test_budget        VARCHAR NOT NULL,
    sample_index       INTEGER NOT NULL,   -- > 0: an extra raw-context sample for pass@k
    prompt_version     VARCHAR NOT NULL,
    raw_reply          VARCHAR,
    parsed_answer      VARCHAR,
    correct            BOOLEAN,            -- NULL when the query has no gold answer
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    cost_usd           DOUBLE,
    latency_s          DOUBLE,
    run_id             VARCHAR NOT NULL
);

-- key: (source, location, reason)
CREATE TABLE quarantine (
    source    VARCHAR,
    location  VARCHAR,
    reason    VARCHAR,
    raw       VARCHAR,
    run_id    VARCHAR
);

-- key: (stage, key); the latest attempt wins
CREATE TABLE failures (
    stage       VARCHAR,
    key         VARCHAR,
    context_id  VARCHAR,
    reason      VARCHAR,
    run_id      VARCHAR
);
