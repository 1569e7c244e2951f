import re

from typer.testing import CliRunner

from sleeptime.cli import app


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def test_sleeptime_run_prints_the_summary_and_the_table_from_the_warehouse(pipeline):
    pipeline.write_config(pass_at_k=2)
    result = CliRunner().invoke(app, ["run", "--config", str(pipeline.config)])
    out = _plain(result.output)
    assert result.exit_code == 0, out
    assert "contexts: 4 new, 0 changed, 0 unchanged, 0 removed" in out
    assert "Ray workers" in out and "failures: 0" in out
    assert "Accuracy and mean test-time completion tokens" in out
    assert "t0-direct" in out and "t2-steps" in out and "large" in out
    assert "published warehouse" in out
    assert (pipeline.out / "quality" / "data_docs" / "index.html").exists()
    # The pass@k baseline: k = 1 and k = 2 raw-context samples, tokens summed over the samples.
    with pipeline.warehouse().read() as con:
        rows = con.execute("SELECT test_budget, k, pass_at_k, mean_test_completion_tokens FROM v_pass_at_k ORDER BY ALL").fetchall()
        n_queries = con.execute("SELECT count(*) FROM queries_current").fetchone()[0]
        assert con.execute("SELECT count(*) FROM answers WHERE sample_index = 1").fetchone()[0] == n_queries * 2
    by = {(b, k): (p, t) for b, k, p, t in rows}
    assert set(by) == {(b, k) for b in ("t0-direct", "t2-steps") for k in (1, 2)}
    for b in ("t0-direct", "t2-steps"):
        assert by[(b, 2)][0] >= by[(b, 1)][0]
        assert by[(b, 2)][1] > by[(b, 1)][1]


def test_a_refused_run_exits_non_zero(pipeline):
    from sleeptime.storage import Lake

    assert CliRunner().invoke(app, ["run", "--config", str(pipeline.config)]).exit_code == 0
    with pipeline.warehouse().read() as con:
        good = con.execute("SELECT * FROM variants_current LIMIT 1").df().iloc[0].to_dict()
    Lake(pipeline.out / "lake").stage("variants", [{**good, "variant_id": "v_bad", "completion_tokens": -1}])
    result = CliRunner().invoke(app, ["run", "--config", str(pipeline.config)])
    assert result.exit_code == 1
    assert "quality gate refused" in _plain(result.output)


def test_policy_explain_names_the_choice_for_a_context(pipeline):
    assert CliRunner().invoke(app, ["run", "--config", str(pipeline.config)]).exit_code == 0
    context_id = pipeline.rows()[0].context.id
    result = CliRunner().invoke(app, ["policy", "explain", context_id, "--config", str(pipeline.config)])
    out = _plain(result.output)
    assert result.exit_code == 0, out
    assert out.startswith("policy ") and context_id in out
    assert "kind" in out or "corpus" in out
    unknown = CliRunner().invoke(app, ["policy", "explain", "no-such-context", "--config", str(pipeline.config)])
    assert unknown.exit_code == 2 and "unknown context" in _plain(unknown.output)
