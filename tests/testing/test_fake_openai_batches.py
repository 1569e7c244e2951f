"""The fake OpenAI server's Files and Batches API and its prefix-caching emulation, through litellm
(the calls a batch pipeline makes) and raw httpx (the wire format and the 400s)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import litellm
import openai
import pytest

from sleeptime.testing.fake_openai import (
    PREFIX_CACHE_BLOCK,
    FakeOpenAIServer,
    FaultConfig,
    PrefixCache,
    parse_multipart,
    prompt_words,
)

LONG_PREFIX = " ".join(f"fact{i}" for i in range(1300))  # 1,300 tokens: 1,280 cacheable


def _body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], "max_tokens": 50, **extra}


def _row(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def _rows(n: int, prefix: str = "item") -> list[dict[str, Any]]:
    return [_row(f"{prefix}-{i}", _body(f"question number {i}")) for i in range(n)]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _kw(server: FakeOpenAIServer) -> dict[str, Any]:
    return {"custom_llm_provider": "openai", "api_base": server.base_url, "api_key": "x"}


def _root(server: FakeOpenAIServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def _upload(server: FakeOpenAIServer, path: Path, rows: list[dict[str, Any]]) -> Any:
    path.write_bytes(_jsonl(rows))
    with open(path, "rb") as f:
        return await litellm.acreate_file(file=f, purpose="batch", **_kw(server))


async def _submit(server: FakeOpenAIServer, path: Path, rows: list[dict[str, Any]], **extra: Any) -> Any:
    uploaded = await _upload(server, path, rows)
    return await litellm.acreate_batch(
        completion_window="24h",
        endpoint="/v1/chat/completions",
        input_file_id=uploaded.id,
        **_kw(server),
        **extra,
    )


async def _wait(server: FakeOpenAIServer, batch_id: str, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = await litellm.aretrieve_batch(batch_id=batch_id, **_kw(server))
        if batch.status in ("completed", "expired", "cancelled", "failed") or time.monotonic() > deadline:
            return batch
        await asyncio.sleep(0.05)


async def _lines(server: FakeOpenAIServer, file_id: str | None) -> dict[str, dict[str, Any]]:
    """A batch output or error file's lines by custom_id (empty when there is no file)."""
    if file_id is None:
        return {}
    content = await litellm.afile_content(file_id=file_id, **_kw(server))
    lines = [json.loads(line) for line in content.content.decode().splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines), "a custom_id appears twice in one file"
    return by_id


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(FaultConfig(latency_s=0, batch_delay_s=0.4)) as running:
        yield running


# --- files ------------------------------------------------------------------------------------


def test_files_api_through_litellm_and_httpx(server: FakeOpenAIServer, tmp_path: Path):
    rows = _rows(3)

    async def scenario() -> tuple[Any, Any, Any]:
        uploaded = await _upload(server, tmp_path / "in.jsonl", rows)
        retrieved = await litellm.afile_retrieve(file_id=uploaded.id, **_kw(server))
        content = await litellm.afile_content(file_id=uploaded.id, **_kw(server))
        return uploaded, retrieved, content

    uploaded, retrieved, content = asyncio.run(scenario())
    data = _jsonl(rows)
    assert uploaded.id.startswith("file-") and uploaded.object == "file" and uploaded.purpose == "batch"
    assert uploaded.bytes == len(data) and uploaded.filename == "in.jsonl" and uploaded.created_at > 0
    assert retrieved.id == uploaded.id and retrieved.bytes == len(data)
    assert content.content == data
    # The same routes without /v1, and the raw bytes.
    raw = httpx.get(f"{_root(server)}/files/{uploaded.id}/content")
    assert raw.status_code == 200 and raw.content == data
    assert raw.headers["content-type"] == "application/octet-stream"
    listed = httpx.get(f"{server.base_url}/files").json()
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [uploaded.id]
    assert httpx.get(f"{server.base_url}/files/file-nope").status_code == 404
    assert server.stats()["files_uploaded"] == 1


def test_bad_uploads_get_400(server: FakeOpenAIServer):
    with httpx.Client(base_url=server.base_url) as client:
        no_purpose = client.post("/files", files={"file": ("a.jsonl", b"{}\n")})
        bad_purpose = client.post("/files", data={"purpose": "nonsense"}, files={"file": ("a.jsonl", b"{}\n")})
        not_multipart = client.post("/files", json={"purpose": "batch"})
        cut = client.post(
            "/files",
            content=b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch',
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
    assert no_purpose.status_code == 400 and "purpose" in no_purpose.json()["error"]["message"]
    assert bad_purpose.status_code == 400 and bad_purpose.json()["error"]["type"] == "invalid_request_error"
    assert not_multipart.status_code == 400
    assert cut.status_code == 400 and "closing boundary" in cut.json()["error"]["message"]
    assert server.stats()["files_uploaded"] == 0


def test_parse_multipart_reads_what_httpx_sends():
    payload = b"line one\r\n--not-a-boundary\r\n\r\nbinary \x00\xff end\r\n"
    request = httpx.Request(
        "POST", "http://x/v1/files", data={"purpose": "batch"}, files={"file": ("my file.jsonl", payload)}
    )
    fields = parse_multipart(request.read(), request.headers["content-type"])
    assert fields["purpose"].data == b"batch" and fields["purpose"].filename is None
    assert fields["file"].data == payload and fields["file"].filename == "my file.jsonl"
    for body, content_type in [
        (b"", "application/json"),
        (b"--b\r\n\r\nx\r\n--b--\r\n", "multipart/form-data"),  # no boundary parameter
        (b"--b\r\nX-Other: 1\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b"),  # no name
        (b"--b\r\nContent-Disposition: form-data; name=a\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b"),
    ]:
        with pytest.raises(ValueError):
            parse_multipart(body, content_type)


# --- batches ----------------------------------------------------------------------------------


def test_batch_completes_after_the_delay_with_the_online_replies(server: FakeOpenAIServer, tmp_path: Path):
    rows = _rows(5)

    async def scenario() -> tuple[Any, Any, float, Any, dict[str, dict[str, Any]], Any]:
        started = time.monotonic()
        created = await _submit(server, tmp_path / "in.jsonl", rows, metadata={"run": "t1"})
        early = await litellm.aretrieve_batch(batch_id=created.id, **_kw(server))
        early_elapsed = time.monotonic() - started
        done = await _wait(server, created.id)
        outputs = await _lines(server, done.output_file_id)
        listed = await litellm.alist_batches(**_kw(server))
        return created, early, early_elapsed, done, outputs, listed

    created, early, early_elapsed, done, outputs, listed = asyncio.run(scenario())
    assert created.id.startswith("batch_") and created.object == "batch" and created.status == "validating"
    assert created.endpoint == "/v1/chat/completions" and created.completion_window == "24h"
    assert created.metadata == {"run": "t1"} and created.request_counts.total == 5
    assert created.output_file_id is None and created.completed_at is None
    if early_elapsed < 0.4:  # read before the delay: not finished yet
        assert early.status in ("validating", "in_progress") and early.output_file_id is None

    assert done.status == "completed" and done.error_file_id is None and done.output_file_id
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 5, 0)
    assert done.in_progress_at is not None and done.completed_at is not None and done.expired_at is None
    assert [b.id for b in listed.data] == [created.id]

    # One output line per item, each the reply the online endpoint gives for the same body.
    assert set(outputs) == {r["custom_id"] for r in rows}
    with httpx.Client(base_url=server.base_url) as client:
        for row in rows:
            line = outputs[row["custom_id"]]
            assert line["id"].startswith("batch_req_") and line["error"] is None
            assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
            body = line["response"]["body"]
            online = client.post("/chat/completions", json=row["body"]).json()
            assert body["object"] == online["object"] == "chat.completion" and body["model"] == online["model"]
            assert body["choices"] == online["choices"] and body["usage"] == online["usage"]

    stats = server.stats()
    assert stats["batches_created"] == 1 and stats["files_uploaded"] == 1
    assert stats["batch_items_submitted"] == {r["custom_id"]: 1 for r in rows}
    assert stats["batch_items_submitted_total"] == 5 and stats["batch_items_submitted_max"] == 1
    assert stats["batch_item_outcomes"] == {"completed": 5, "failed": 0, "expired": 0, "cancelled": 0}
    assert stats["requests"] == 5  # the online requests above; batch items are not online requests


def test_item_failures_land_in_the_error_file(tmp_path: Path):
    config = FaultConfig(latency_s=0, batch_delay_s=0.05, batch_item_failure_rate=0.4, seed=11)
    rows = _rows(30)
    rows.append(_row("no-messages", {"model": "fake-model"}))  # what the online endpoint answers 400
    expected = {r["custom_id"]: config.batch_item_fate(r["custom_id"]) for r in rows[:-1]}
    failing = {cid for cid, fate in expected.items() if fate == "failed"}
    assert 0 < len(failing) < 30 and set(expected.values()) == {"ok", "failed"}

    with FakeOpenAIServer(config) as server:

        async def scenario() -> tuple[Any, dict[str, Any], dict[str, Any]]:
            created = await _submit(server, tmp_path / "in.jsonl", rows)
            done = await _wait(server, created.id)
            return done, await _lines(server, done.output_file_id), await _lines(server, done.error_file_id)

        done, outputs, errors = asyncio.run(scenario())
        stats = server.stats()
    assert done.status == "completed"
    assert set(outputs) == {cid for cid, fate in expected.items() if fate == "ok"}
    assert set(errors) == failing | {"no-messages"}
    for cid, line in errors.items():
        status = 400 if cid == "no-messages" else 500
        assert line["error"] is None and line["response"]["status_code"] == status
        error_type = "invalid_request_error" if status == 400 else "server_error"
        assert line["response"]["body"]["error"]["type"] == error_type
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (31, len(outputs), len(errors))
    assert stats["batch_item_outcomes"]["failed"] == len(errors)


def test_expired_batch_leaves_its_unfinished_items_in_the_error_file_and_a_resubmission_runs_them(tmp_path: Path):
    config = FaultConfig(latency_s=0, batch_delay_s=0.05, batch_expire_fraction=0.3, seed=5)
    rows = _rows(30)
    unfinished = {r["custom_id"] for r in rows if config.batch_item_fate(r["custom_id"]) == "unfinished"}
    assert 0 < len(unfinished) < 30

    with FakeOpenAIServer(config) as server:

        async def first() -> tuple[Any, dict[str, Any], dict[str, Any]]:
            created = await _submit(server, tmp_path / "in.jsonl", rows)
            done = await _wait(server, created.id)
            return done, await _lines(server, done.output_file_id), await _lines(server, done.error_file_id)

        done, outputs, errors = asyncio.run(first())
        assert done.status == "expired" and done.expired_at is not None and done.completed_at is None
        assert set(errors) == unfinished and set(outputs) == {r["custom_id"] for r in rows} - unfinished
        for line in errors.values():
            assert line["response"] is None and line["error"]["code"] == "batch_expired"
            assert line["error"]["message"] and line["id"].startswith("batch_req_")
        assert (done.request_counts.completed, done.request_counts.failed) == (30 - len(unfinished), 0)

        # A batch created after the fraction is set back to 0 completes: resubmit exactly the unfinished.
        assert server.update_config(batch_expire_fraction=0).batch_expire_fraction == 0
        retry_rows = [r for r in rows if r["custom_id"] in unfinished]

        async def second() -> tuple[Any, dict[str, Any]]:
            created = await _submit(server, tmp_path / "retry.jsonl", retry_rows)
            retried = await _wait(server, created.id)
            return retried, await _lines(server, retried.output_file_id)

        retried, retried_outputs = asyncio.run(second())
        stats = server.stats()
    assert retried.status == "completed" and set(retried_outputs) == unfinished
    # Exactly once per item in the union of output files; the counters show who went in twice.
    assert not set(outputs) & set(retried_outputs)
    assert stats["batch_items_submitted"] == {r["custom_id"]: 1 + (r["custom_id"] in unfinished) for r in rows}
    assert stats["batch_items_submitted_max"] == 2 and stats["batches_created"] == 2
    assert stats["batch_item_outcomes"]["expired"] == len(unfinished)


def test_cancel(tmp_path: Path):
    with FakeOpenAIServer(FaultConfig(latency_s=0, batch_delay_s=60)) as server:

        async def scenario() -> tuple[Any, Any, dict[str, Any], BaseException]:
            created = await _submit(server, tmp_path / "in.jsonl", _rows(4))
            cancelling = await litellm.acancel_batch(batch_id=created.id, **_kw(server))
            cancelled = await litellm.aretrieve_batch(batch_id=created.id, **_kw(server))
            outputs = await _lines(server, cancelled.output_file_id)
            with pytest.raises(Exception) as again:
                await litellm.acancel_batch(batch_id=created.id, **_kw(server))
            return cancelling, cancelled, outputs, again.value

        cancelling, cancelled, outputs, again = asyncio.run(scenario())
        stats = server.stats()
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    # Cancelled while validating: nothing was done, the output file is empty, no error file.
    assert outputs == {} and cancelled.error_file_id is None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (0, 0)
    assert stats["batch_item_outcomes"]["cancelled"] == 4
    # The OpenAI SDK's error, not mapped to a litellm one.
    assert type(again) is openai.BadRequestError and again.status_code == 400, f"{type(again).__name__}: {again}"
    assert "Cannot cancel a batch with status 'cancelled'" in str(again)


def test_cancel_in_progress_keeps_the_items_done_so_far(tmp_path: Path):
    with FakeOpenAIServer(FaultConfig(latency_s=0, batch_delay_s=1.0)) as server:
        rows = _rows(20)

        async def scenario() -> tuple[Any, dict[str, Any]]:
            created = await _submit(server, tmp_path / "in.jsonl", rows)
            await asyncio.sleep(0.4)
            cancelling = await litellm.acancel_batch(batch_id=created.id, **_kw(server))
            assert cancelling.status == "cancelling"
            cancelled = await litellm.aretrieve_batch(batch_id=created.id, **_kw(server))
            return cancelled, await _lines(server, cancelled.output_file_id)

        cancelled, outputs = asyncio.run(scenario())
    assert cancelled.status == "cancelled" and cancelled.request_counts.completed == len(outputs)
    assert set(outputs) <= {r["custom_id"] for r in rows}
    assert all(line["response"]["status_code"] == 200 for line in outputs.values())


def test_bad_batch_requests_get_400(server: FakeOpenAIServer, tmp_path: Path):
    client = httpx.Client(base_url=server.base_url)

    def upload(data: bytes, purpose: str = "batch") -> str:
        response = client.post("/files", data={"purpose": purpose}, files={"file": ("f", data)})
        return str(response.json()["id"])

    def create(file_id: str, **extra: Any) -> httpx.Response:
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
        return client.post("/batches", json=body)

    duplicate = _jsonl([_row("same", _body("a")), _row("same", _body("b"))])
    bad_files = {
        "duplicate_custom_id": duplicate,
        "not JSON": b'{"custom_id": "a", \n',
        "no custom_id": _jsonl([{"method": "POST", "url": "/v1/chat/completions", "body": _body("a")}]),
        "wrong url": _jsonl([{**_row("a", _body("a")), "url": "/v1/embeddings"}]),
        "body not an object": _jsonl([{**_row("a", _body("a")), "body": "hi"}]),
        "empty": b"\n",
    }
    for what, data in bad_files.items():
        response = create(upload(data))
        assert response.status_code == 400, what
        assert response.json()["error"]["type"] == "invalid_request_error", what
    assert create(upload(duplicate)).json()["error"]["code"] == "duplicate_custom_id"
    good = upload(_jsonl(_rows(1)))
    assert create(good, endpoint="/v1/embeddings").status_code == 400
    assert create(good, completion_window="1h").status_code == 400
    assert create(upload(_jsonl(_rows(1)), purpose="assistants")).status_code == 400
    assert create("file-nope").status_code == 404
    assert client.get("/batches/batch_nope").status_code == 404
    client.close()
    stats = server.stats()
    assert stats["batches_created"] == 0 and stats["batch_items_submitted"] == {}

    async def through_litellm() -> BaseException:
        uploaded = await _upload(server, tmp_path / "dup.jsonl", [_row("x", _body("a")), _row("x", _body("b"))])
        with pytest.raises(Exception) as caught:
            await litellm.acreate_batch(
                completion_window="24h", endpoint="/v1/chat/completions", input_file_id=uploaded.id, **_kw(server)
            )
        return caught.value

    exc = asyncio.run(through_litellm())
    assert type(exc) is openai.BadRequestError and exc.status_code == 400, f"{type(exc).__name__}: {exc}"
    assert "duplicate custom_id" in str(exc)

    async def unknown() -> BaseException:
        with pytest.raises(Exception) as caught:
            await litellm.aretrieve_batch(batch_id="batch_nope", **_kw(server))
        return caught.value

    assert type(asyncio.run(unknown())) is openai.NotFoundError


def test_config_route_and_reset(server: FakeOpenAIServer, tmp_path: Path):
    with httpx.Client(base_url=_root(server)) as client:
        assert client.post("/config", json={"batch_item_failure_rate": 0.5}).json()["batch_item_failure_rate"] == 0.5
        assert client.post("/config", json={"max_concurrency": 4}).status_code == 400
        assert client.post("/config", json={"no_such_field": 1}).status_code == 400
        assert client.post("/config", json={"rate_429": 0.7, "rate_500": 0.7}).status_code == 400
    asyncio.run(_submit(server, tmp_path / "in.jsonl", _rows(2)))
    assert server.stats()["batch_items_submitted_total"] == 2
    server.reset()
    stats = server.stats()
    assert stats["batch_items_submitted"] == {} and stats["batches_created"] == 0 and stats["files_uploaded"] == 0
    assert len(httpx.get(f"{server.base_url}/batches").json()["data"]) == 1  # stored batches stay


# --- prefix caching ---------------------------------------------------------------------------


def _messages(question: str, prefix: str = LONG_PREFIX) -> list[dict[str, str]]:
    return [{"role": "system", "content": prefix}, {"role": "user", "content": question}]


async def _cached(server: FakeOpenAIServer, messages: list[dict[str, str]]) -> tuple[int, int]:
    response = await litellm.acompletion(
        model="openai/fake", api_base=server.base_url, api_key="x", messages=messages, num_retries=0
    )
    return response.usage.prompt_tokens_details.cached_tokens or 0, response.usage.prompt_tokens


def test_prefix_caching_through_litellm():
    with FakeOpenAIServer(FaultConfig(latency_s=0)) as server:

        async def scenario() -> dict[str, tuple[int, int]]:
            seen = {"first": await _cached(server, _messages("what is fact7?"))}
            seen["second"] = await _cached(server, _messages("and what is fact8?"))
            short = [{"role": "user", "content": "a short prompt"}]
            seen["short"] = await _cached(server, short)
            seen["short again"] = await _cached(server, short)
            under = " ".join(f"w{i}" for i in range(1000))
            seen["under 1024"] = await _cached(server, _messages("q", under))
            seen["under 1024 again"] = await _cached(server, _messages("q", under))
            seen["other prefix"] = await _cached(server, _messages("q", "other " + LONG_PREFIX))
            return seen

        seen = asyncio.run(scenario())
        stats = server.stats()
    cached, prompt = seen["second"]
    assert cached == 1280 and cached % PREFIX_CACHE_BLOCK == 0 and cached <= prompt == 1304
    assert seen["first"][0] == seen["short"][0] == seen["short again"][0] == 0
    assert seen["under 1024"][0] == seen["under 1024 again"][0] == 0
    assert seen["other prefix"][0] == 0  # the prefix differs from the first token on
    assert stats["cached_prompt_tokens"] == 1280 and stats["prefix_cache_hits"] == 1


def test_prefix_caching_inside_batches_and_the_rule():
    # The rule: the longest seen prefix, in whole 128-token blocks, at least 1,024; identical prompts included.
    cache = PrefixCache()
    words = prompt_words(_messages("q"))
    assert cache.lookup_and_record(words, 300, now=0.0) == 0
    assert cache.lookup_and_record(words, 300, now=1.0) == 1280  # 1,301 tokens: 10 whole blocks
    assert cache.lookup_and_record(words[:1100] + ["x"] * 300, 300, now=2.0) == 1024
    assert cache.lookup_and_record(words, 0, now=3.0) == 0  # TTL 0: caching off
    # At 301.5 only what was seen from 1.5 on counts: the 1,024-token prefix shared at 2.0, not the rest.
    assert cache.lookup_and_record(words, 300, now=301.5) == 1024
    assert cache.lookup_and_record(words, 300, now=700.0) == 0  # nothing within the last 300 s
    bounded = PrefixCache(max_entries=5)
    for i in range(4):
        bounded.lookup_and_record([f"p{i}"] + words, 300, now=float(i))
    assert len(bounded) == 5

    with FakeOpenAIServer(FaultConfig(latency_s=0, batch_delay_s=0)) as server:
        rows = [_row(f"c{i}", {"model": "m", "messages": _messages(f"question {i}")}) for i in range(3)]

        async def scenario() -> dict[str, Any]:
            uploaded = await litellm.acreate_file(file=("in.jsonl", _jsonl(rows)), purpose="batch", **_kw(server))
            created = await litellm.acreate_batch(
                completion_window="24h", endpoint="/v1/chat/completions", input_file_id=uploaded.id, **_kw(server)
            )
            done = await _wait(server, created.id)
            return await _lines(server, done.output_file_id)

        outputs = asyncio.run(scenario())
    details = [outputs[f"c{i}"]["response"]["body"]["usage"]["prompt_tokens_details"] for i in range(3)]
    assert details == [{"cached_tokens": 0}, {"cached_tokens": 1280}, {"cached_tokens": 1280}]
