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
