-- Selection policy v2 (sleeptime/policy/_policy.py): the stored rows are the policy itself.
ALTER TABLE policies ADD COLUMN kind VARCHAR;
ALTER TABLE policies ADD COLUMN estimate DOUBLE;
ALTER TABLE policies ADD COLUMN estimate_lower DOUBLE;
ALTER TABLE policies ADD COLUMN expected_queries DOUBLE;
ALTER TABLE policies ADD COLUMN mean_latency_ms DOUBLE;
ALTER TABLE policies ADD COLUMN detail_json VARCHAR;

-- The newest policy: the latest run's version that has a summary row (older releases' rows have none).
CREATE OR REPLACE VIEW v_policy_current AS
SELECT * FROM policies
WHERE policy_version = (
    SELECT policy_version FROM policies WHERE scope = 'policy' ORDER BY run_id DESC LIMIT 1
);

-- What the current policy picks: per (context, kind), and for contexts it never saw per kind.
CREATE OR REPLACE VIEW v_policy_choices AS
SELECT policy_version, scope, scope_value, kind, sleep_budget, test_budget, estimate, estimate_lower, n,
       expected_queries, cost_weighted, cost_usd
FROM v_policy_current WHERE chosen AND scope IN ('context', 'kind', 'corpus');

-- Which c' each context gets under the current policy, and what it costs.
CREATE OR REPLACE VIEW v_policy_allocation AS
SELECT scope_value AS context_id, sleep_budget, expected_queries, sleep_tokens_per_context, sleep_cost_usd_per_context
FROM v_policy_current WHERE scope = 'allocation';

-- The fitted policy's summary: one row, the JSON of the fit (target, required accuracy, price, traffic).
CREATE OR REPLACE VIEW v_policy_summary AS
SELECT policy_version, run_id, settings_json, detail_json
FROM v_policy_current WHERE scope = 'policy';
