-- Prompt caching (issue 13): of each call's prompt tokens, how many the provider read from its
-- prompt cache and how many it wrote to it; cost_usd already prices them at the cache prices
-- (sleeptime.model.price). Rows from before this migration read 0 (no cache was recorded).

ALTER TABLE variants ADD COLUMN cached_prompt_tokens BIGINT DEFAULT 0;
ALTER TABLE variants ADD COLUMN cache_write_tokens BIGINT DEFAULT 0;
ALTER TABLE answers ADD COLUMN cached_prompt_tokens BIGINT DEFAULT 0;
ALTER TABLE answers ADD COLUMN cache_write_tokens BIGINT DEFAULT 0;

-- Per test model and budget: how much of the test-time prompt the provider's cache served.
CREATE OR REPLACE VIEW v_prompt_cache AS
SELECT test_model, test_budget,
       count(*) AS answers,
       sum(prompt_tokens) AS prompt_tokens,
       sum(coalesce(cached_prompt_tokens, 0)) AS cached_prompt_tokens,
       sum(coalesce(cache_write_tokens, 0)) AS cache_write_tokens,
       sum(coalesce(cached_prompt_tokens, 0)) / nullif(sum(prompt_tokens), 0) AS cached_share,
       sum(cost_usd) AS cost_usd
FROM answers_current
GROUP BY ALL
ORDER BY ALL;
