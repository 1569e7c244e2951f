-- The selection policy (sleeptime/policy): fitted at publish time from the current answers and
-- stored per version, so the service and dashboards can say which policy made a choice.

-- key: (policy_version, scope, scope_value, sleep_budget, test_budget)
CREATE TABLE policies (
    policy_version            VARCHAR NOT NULL,
    settings_json             VARCHAR,
    scope                     VARCHAR NOT NULL,   -- context | kind | corpus
    scope_value               VARCHAR NOT NULL,
    sleep_budget              VARCHAR NOT NULL,
    test_budget               VARCHAR NOT NULL,
    n                         BIGINT,
    correct                   BIGINT,
    accuracy                  DOUBLE,
    wilson_lower              DOUBLE,
    mean_test_tokens          DOUBLE,
    mean_test_cost_usd        DOUBLE,
    sleep_tokens_per_context  DOUBLE,
    sleep_cost_usd_per_context DOUBLE,
    cost_weighted             DOUBLE,
    cost_usd                  DOUBLE,
    adequate                  BOOLEAN,
    chosen                    BOOLEAN,
    run_id                    VARCHAR NOT NULL
);

-- The newest policy: the version fitted by the latest run.
CREATE VIEW v_policy_current AS
SELECT * FROM policies
WHERE policy_version = (SELECT policy_version FROM policies ORDER BY run_id DESC LIMIT 1);

-- What the current policy picks per scope (one row per scope that has an adequate option).
CREATE VIEW v_policy_choices AS
SELECT policy_version, scope, scope_value, sleep_budget, test_budget, accuracy, wilson_lower, n,
       cost_weighted, cost_usd
FROM v_policy_current WHERE chosen;
