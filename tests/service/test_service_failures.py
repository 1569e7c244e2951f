"""Model errors: retried by the gateway, then the next-cheapest adequate option, then the raw
context, then 503 with the reason (scripted with the mock provider)."""

import litellm
import pytest
from fastapi.testclient import TestClient

from sleeptime.model import REFERENCE_MODEL, ModelSpec
from sleeptime.service import ServiceSettings, create_app
from sleeptime.service.selection import select

QUESTION = "How many coins does Hugo have?"  # no kind: the corpus scope


@pytest.fixture(scope="module")
def mocked(served, helpers, tmp_path_factory):
    from sleeptime.model.providers import mock

    handler = mock.register()
    config = served.config.model_copy(update={
        "models": {
            "reference": REFERENCE_MODEL,
            "mock": ModelSpec(model="mock/m", input_cost_per_million=1.0, output_cost_per_million=2.0, max_retries=0),
            "mock-retry": ModelSpec(model="mock/m", input_cost_per_million=0, output_cost_per_million=0,
                                    max_retries=2, backoff_base_s=0.0, backoff_max_s=0.0),
        },
        "test_model": "mock",
    })
    settings = ServiceSettings(config=config, keys_path=served.keys.path,
                               query_log_dir=tmp_path_factory.mktemp("failures-log"), reload_interval_s=0.2)
    with TestClient(create_app(settings)) as client:
        helpers.wait_ready(client)
        yield client, handler
    handler.script.clear()


def ask(served, client, context_id=None):
    context_id = context_id or served.ids("acme")[0]
    return client.post("/v1/answer", json={"context_id": context_id, "question": QUESTION}, headers=served.headers("acme"))


def test_first_option_fails_the_next_cheapest_adequate_answers(served, mocked):
    client, handler = mocked
    handler.script.clear()
    handler.script.extend([RuntimeError("provider exploded"), "Hugo has 12 coins. The answer is 12."])
    context_id = served.ids("acme")[0]
    plan = select(client.app.state.parts.holder.current, client.app.state.parts.holder.current.contexts[context_id], None)
    r = ask(served, client, context_id)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "12"
    first, second = plan.steps[0], plan.steps[1]
    assert [(a["sleep_budget"], a["test_budget"], a["ok"]) for a in body["attempts"]] == [
        (*first.option.option, False), (*second.option.option, True)]
    assert "provider exploded" in body["attempts"][0]["error"]
    assert (body["choice"]["sleep_budget"], body["choice"]["test_budget"]) == second.option.option
    assert body["choice"]["variant_id"] == (second.variant.id if second.variant else None)
    assert body["choice"]["fallback"] is True and "failure chain" in body["choice"]["reason"]
    assert body["cost_usd"] > 0 and body["usage"]["prompt_tokens"] > 0
    # The second call carried the second option's notes (or none for the raw context).
    notes = "Notes prepared in advance" in handler.calls[-1]["messages"][-1]["content"]
    assert notes == (second.variant is not None)


def test_then_the_raw_context_at_the_largest_test_budget(served, mocked):
    client, handler = mocked
    handler.script.clear()
    handler.script.extend([RuntimeError("one"), RuntimeError("two"), "The answer is 5."])
    body = ask(served, client).json()
    assert [a["ok"] for a in body["attempts"]] == [False, False, True]
    assert (body["choice"]["sleep_budget"], body["choice"]["test_budget"], body["choice"]["variant_id"]) == ("none", "t2-steps", None)
    assert "Notes prepared in advance" not in handler.calls[-1]["messages"][-1]["content"]


def test_when_every_option_fails_503_with_the_reason(served, mocked):
    client, handler = mocked
    handler.script.clear()
    handler.script.extend([RuntimeError(f"down {i}") for i in range(5)])
    r = ask(served, client)
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert detail["reason"].startswith("every option failed") and "down 0" in detail["reason"] and "down 2" in detail["reason"]
    assert len(detail["attempts"]) == 3 and not any(a["ok"] for a in detail["attempts"])
    handler.script.clear()
    metrics = client.get("/metrics").text
    assert 'sleeptime_answers_total{outcome="failed"} 1' in metrics
    assert 'sleeptime_requests_total{path="/v1/answer",status="503"} 1' in metrics


def test_retryable_errors_are_retried_by_the_gateway_first(served, mocked):
    client, handler = mocked
    gateway = client.app.state.parts.gateway
    handler.script.clear()
    rate_limited = litellm.RateLimitError("slow down", llm_provider="mock", model="m")
    handler.script.extend([rate_limited, rate_limited, "The answer is 9."])
    # Same app, but the retrying spec: swap the test model's spec for this call only.
    original = gateway.models["mock"]
    gateway.models["mock"] = gateway.models["mock-retry"]
    try:
        body = ask(served, client).json()
    finally:
        gateway.models["mock"] = original
    assert body["answer"] == "9" and len(body["attempts"]) == 1 and body["attempts"][0]["ok"]
    assert body["choice"]["fallback"] is False
