-- Provider batches of sleep-time requests (sleeptime/batch.py; issue 13). The lake records each
-- batch before the run waits on it; the warehouse shows them for dashboards: what is in flight,
-- what was collected, what was sent again.

CREATE TABLE batches (
    batch_id       VARCHAR,
    model          VARCHAR,
    stage          VARCHAR,
    input_file_id  VARCHAR,
    input_sha256   VARCHAR,
    item_keys_json VARCHAR,
    context_ids_json VARCHAR,
    items          BIGINT,
    attempt        INTEGER,
    status         VARCHAR,
    submitted_at   TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ,
    run_id         VARCHAR,
    detail_json    VARCHAR
);
