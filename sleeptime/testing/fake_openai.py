"""A local OpenAI-compatible fake provider with fault injection.

Used by the fault-injection tests and by the benchmarks that measure orchestration overhead at
a fixed model latency. It speaks just enough HTTP/1.1 (keep-alive, Content-Length and chunked
request bodies) to serve the OpenAI SDK, httpx and aiohttp, and it is written on bare asyncio
streams because some faults need the raw socket: a truncated body, a dropped connection.

Routes (each also answered without the ``/v1`` prefix):

* ``POST /v1/chat/completions``: non-streaming only (``"stream": true`` gets 400).
* ``POST /v1/files``: multipart/form-data with the fields ``purpose`` and ``file``; returns a file
  object (``id`` ``file-...``, ``object``, ``bytes``, ``created_at``, ``filename``, ``purpose``,
  ``status``). ``GET /v1/files`` (list), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``
  (the raw bytes), ``DELETE /v1/files/{id}``.
* ``POST /v1/batches`` (``input_file_id``, ``endpoint`` ``/v1/chat/completions``,
  ``completion_window`` ``24h``, optional ``metadata``), ``GET /v1/batches/{id}``,
  ``POST /v1/batches/{id}/cancel``, ``GET /v1/batches`` (list, newest first): see "Batches" below.
* ``GET /v1/models``, ``GET /health``.
* ``GET /stats``: ``requests``, ``outcomes`` (count per outcome kind), ``in_flight``,
  ``in_flight_max``, ``waiting``, ``connections``, ``bad_requests``, and ``files_uploaded``,
  ``batches_created``, ``batch_items_submitted`` (``{custom_id: times submitted}``),
  ``batch_items_submitted_total``, ``batch_items_submitted_max`` (the largest of those counts: 1
  proves that no item went in twice), ``batch_item_outcomes`` (items per fate: ``completed``,
  ``failed``, ``expired``, ``cancelled``), ``cached_prompt_tokens`` (the sum of every reported
  ``cached_tokens``), ``prefix_cache_hits``.
* ``POST /stats/reset``: zero the counters, forget the per-body attempts, the per-custom_id
  submissions and the prefix cache, reseed. Stored files and batches stay.
* ``POST /config``: a JSON object of :class:`FaultConfig` fields to change from now on (not
  ``max_concurrency``); answers the whole new config. The same as
  :meth:`FakeOpenAIServer.update_config`, for the subprocess form.

Error bodies are OpenAI's ``{"error": {"message", "type", "param", "code"}}``; an unknown file or
batch gets 404, a malformed upload, batch request or input file gets 400.

Every chat request draws one outcome, with the probabilities in :class:`FaultConfig`:

============  ==============================================================================
``ok``        after ``latency_s``: a chat.completion whose content is ``ANSWER: <n>``, n a hash
              of the last user message mod 100 (see :func:`reply_for`)
``429``       at once: 429, ``Retry-After: <retry_after_s>``, an OpenAI-style error body
``500``       at once: 500, an OpenAI-style error body
``slow``      after ``slow_s`` (meant to exceed the client's timeout): the ``ok`` reply
``malformed`` after ``latency_s``: 200 whose body is the first half of the JSON, so not JSON
``truncated`` after ``latency_s``: 200 announcing the full Content-Length, half the bytes, close
``dropped``   at once: the connection is closed without any response
============  ==============================================================================

A request first waits for one of the ``max_concurrency`` slots (0: no cap), then draws its
outcome, whatever it is, so the cap behaves like a provider's capacity.

Prefix caching (OpenAI's rule), online and inside batches: tokens are the whitespace-separated
words of the messages' texts, in order (the same count as ``usage.prompt_tokens``). A prompt of at
least 1,024 tokens reports ``usage.prompt_tokens_details.cached_tokens`` = the longest prefix of it
that an earlier answered prompt shared within ``prefix_cache_ttl_s`` (each hit refreshes it),
rounded down to a multiple of 128, and only when that is at least 1,024; otherwise 0. Every
completion carries ``prompt_tokens_details`` (``{"cached_tokens": 0}`` when nothing is cached).
The store keeps a 16-byte hash per 128-token block prefix (from 1,024 tokens up) with when it was
last seen, at most ``PREFIX_CACHE_MAX_ENTRIES`` of them, the least recently seen evicted first.
Only prompts that got a completion body (``ok``, ``slow``, ``malformed``, ``truncated``, batch
items that ran) are looked up and recorded.

Batches. The input file is JSONL, one ``{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body": {...chat request...}}`` per line; a line that is not such an
object, a duplicate ``custom_id``, an empty file, a file whose purpose is not ``batch``, another
endpoint or a window other than ``24h`` gets 400 at creation (OpenAI validates asynchronously;
here it is synchronous). Each batch keeps the config it was created under. Status is evaluated on
every read (no timers); with ``d = batch_delay_s`` after creation:

=================  =============================================================================
``validating``     what the create call answers, and until ``d / 10``
``in_progress``    until ``d``
``completed``      at ``d`` when ``batch_expire_fraction`` was 0 at creation: every item ran
``expired``        at ``d`` otherwise: the items drawn ``unfinished`` never ran
``cancelling``     what the cancel call answers (OpenAI: up to 10 minutes)
``cancelled``      from the next read on; the items "done" at the cancel ran, the others never run
=================  =============================================================================

The items that run, run when the batch is finalized (at the first read at or after the time
above), in file order, through the same reply logic as the online endpoint (no latency, no
online fault draw). Each item's fate is a pure function of the batch's config, its ``custom_id``
and its attempt number (how many times that custom_id was submitted before, since the last
reset), so a resubmitted item draws afresh; :meth:`FaultConfig.batch_item_fate` predicts it:

* ``unfinished`` (only in a batch created with ``batch_expire_fraction`` > 0, with that
  probability): error file line ``{"id", "custom_id", "response": null, "error": {"code":
  "batch_expired", "message": ...}}``, as OpenAI writes it.
* a body that the online endpoint would answer 400 (no ``messages`` list, ``"stream": true``):
  error file line with ``response.status_code`` 400 and ``body: {"error": {...}}``.
* ``failed`` (probability ``batch_item_failure_rate``): the same with status 500, ``server_error``.
* ``ok``: output file line ``{"id": "batch_req_...", "custom_id", "response": {"status_code": 200,
  "request_id": "req_...", "body": <the chat.completion the online endpoint returns>}, "error":
  null}``.

A cancel "completes" the items whose progress draw is below the elapsed share of the
``in_progress`` phase at the cancel (none while ``validating``); the rest are in neither file (as
OpenAI documents only the partial output). Cancelling a batch that has already finished gets 400.
The output file (purpose ``batch_output``) is written whenever a batch finishes, even empty; the
error file only when it has a line. ``request_counts``: ``total`` items, ``completed`` output
lines, ``failed`` error lines for items that ran (400/500); expired and cancelled items count in
neither.

What litellm 1.106.2 raises for each outcome (``openai/...`` model, ``num_retries=0``, one HTTP
request per call; asserted by ``tests/testing/test_fake_openai.py``). All of them are in
``sleeptime.model._gateway.RETRYABLE_ERRORS``:

============  ==============================  ==================================================
``429``       ``litellm.RateLimitError``      Retry-After only in ``exc.litellm_response_headers``
``500``       ``litellm.InternalServerError``
``slow``      ``litellm.Timeout``             an ``openai.APITimeoutError``, no ``litellm`` parent
``malformed`` ``litellm.InternalServerError`` the JSON decode error, wrapped as a status 500
``truncated`` ``litellm.InternalServerError`` "Connection error.", wrapped as a status 500
``dropped``   ``litellm.InternalServerError`` "Connection error.", wrapped as a status 500
============  ==============================  ==================================================

litellm wraps any OpenAI SDK error without a status code (connection errors, decode errors) into
a status-500 error, hence no ``APIConnectionError`` for a broken connection. On a
``RateLimitError``, ``exc.response`` is a synthetic response with no headers and ``exc.headers``
is None; the provider's headers are in ``exc.litellm_response_headers``.

The Files and Batches API through litellm 1.106.2 (``kw``: ``custom_llm_provider="openai",
api_base=<base_url>, api_key="x"``; asserted by ``tests/testing/test_fake_openai_batches.py``):

* ``await litellm.acreate_file(file=open(path, "rb"), purpose="batch", **kw)`` (or
  ``file=(name, bytes)``): an ``OpenAIFileObject`` (``.id``, ``.bytes``, ``.filename``, ``.purpose``).
* ``await litellm.afile_retrieve(file_id=..., **kw)``: an ``OpenAIFileObject``.
* ``await litellm.afile_content(file_id=..., **kw)``: an ``HttpxBinaryResponseContent``, the
  bytes in ``.content``.
* ``await litellm.acreate_batch(completion_window="24h", endpoint="/v1/chat/completions",
  input_file_id=..., metadata={...}, **kw)``: a ``LiteLLMBatch`` (the openai ``Batch`` model),
  status ``validating``.
* ``await litellm.aretrieve_batch(batch_id=..., **kw)``: a ``LiteLLMBatch``.
* ``await litellm.acancel_batch(batch_id=..., **kw)``: a ``LiteLLMBatch``, status ``cancelling``.
* ``await litellm.alist_batches(**kw)``: an openai ``AsyncCursorPage[Batch]``, the batches in
  ``.data``.

Their errors are the OpenAI SDK's, not mapped to litellm's: a 400 (bad input file, duplicate
custom_id, cancelling a finished batch) raises ``openai.BadRequestError``, an unknown file or batch
``openai.NotFoundError`` (``exc.status_code`` 400 / 404, the server's error body in the message).
Prefix caching shows as ``response.usage.prompt_tokens_details.cached_tokens`` on
``litellm.acompletion``.

Two ways to run it: :class:`FakeOpenAIServer` (a background thread with its own event loop,
for tests) and a subprocess, ``python -m sleeptime.testing.fake_openai --port 0
--latency-ms 100 --max-concurrency 16 --rate-429 0.1``, which :func:`spawn_server` wraps (for
benchmarks, so the server does not share the client's interpreter). Every config field has its
flag (``--batch-delay-s``, ``--batch-item-failure-rate``, ``--batch-expire-fraction``,
``--prefix-cache-ttl-s``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.message
import hashlib
import json
import queue
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The order is the order of the cumulative draw; changing it changes every seeded sequence.
FAULT_KINDS: tuple[str, ...] = ("429", "500", "slow", "malformed", "truncated", "dropped")
OUTCOMES: tuple[str, ...] = ("ok", *FAULT_KINDS)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}
# OpenAI's prompt caching: prompts from 1,024 tokens, cache hits in 128-token increments.
PREFIX_CACHE_MIN_TOKENS = 1024
PREFIX_CACHE_BLOCK = 128
PREFIX_CACHE_MAX_ENTRIES = 200_000  # block-prefix hashes kept; ~50 bytes each

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_ITEM_FATES: tuple[str, ...] = ("ok", "failed", "unfinished")
_FINAL_BATCH_STATUSES = frozenset({"completed", "expired", "cancelled", "failed"})
_UPLOAD_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."

_MODELS_BODY = json.dumps(
    {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "fake-openai"}]}
).encode()


class FaultConfig(BaseModel):
    """How the fake server behaves. Rates are probabilities per chat request; their sum is <= 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float = Field(default=0.1, ge=0, description="seconds before every 200 response")
    max_concurrency: int = Field(default=0, ge=0, description="requests served at once; the rest queue (0: no cap)")
    rate_429: float = Field(default=0.0, ge=0, le=1, description="share answered 429 with Retry-After")
    rate_500: float = Field(default=0.0, ge=0, le=1, description="share answered 500")
    rate_slow: float = Field(default=0.0, ge=0, le=1, description="share answered only after slow_s")
    rate_malformed: float = Field(default=0.0, ge=0, le=1, description="share answered 200 with a non-JSON body")
    rate_truncated: float = Field(default=0.0, ge=0, le=1, description="share whose 200 body is cut short")
    rate_dropped: float = Field(default=0.0, ge=0, le=1, description="share whose connection is closed unanswered")
    slow_s: float = Field(default=30.0, ge=0, description="delay of a slow response")
    retry_after_s: float = Field(default=1.0, ge=0, description="the Retry-After value of a 429")
    seed: int = Field(default=0, description="seed of the fault draws")
    deterministic: bool = Field(
        default=False,
        description="draw each fault from (seed, request body, attempt number for that body), not from arrival order",
    )
    batch_delay_s: float = Field(default=1.0, ge=0, description="seconds from a batch's creation to its end")
    batch_item_failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of batch items answered 500 in the error file"
    )
    batch_expire_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="when > 0, a batch created now expires, this share of its items left unfinished",
    )
    prefix_cache_ttl_s: float = Field(
        default=300.0, ge=0, description="seconds a seen prompt prefix stays cached (0: no prefix caching)"
    )

    @model_validator(mode="after")
    def _rates_sum_to_at_most_one(self) -> FaultConfig:
        total = sum(self.rate(kind) for kind in FAULT_KINDS)
        if total > 1 + 1e-9:
            rates = ", ".join(f"rate_{kind}={self.rate(kind)}" for kind in FAULT_KINDS if self.rate(kind))
            raise ValueError(f"fault rates must sum to at most 1, got {total:g} ({rates})")
        return self

    def rate(self, kind: str) -> float:
        return float(getattr(self, f"rate_{kind}"))

    def outcome_for(self, u: float) -> str:
        """The outcome for a uniform draw ``u`` in [0, 1)."""
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += self.rate(kind)
            if u < edge:
                return kind
        return "ok"

    def batch_draw(self, kind: str, custom_id: str, attempt: int = 0) -> float:
        """A uniform draw in [0, 1) for one batch item: a pure function of (seed, kind, attempt, custom_id)."""
        digest = hashlib.blake2b(f"{self.seed}:{kind}:{attempt}:{custom_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") / 2**64

    def batch_item_fate(self, custom_id: str, attempt: int = 0) -> str:
        """What a batch item created under this config meets, for a valid body (one of ``BATCH_ITEM_FATES``).

        ``attempt`` is how many times that custom_id was submitted before (0 for the first time).
        ``unfinished`` only happens with ``batch_expire_fraction`` > 0 (the batch then expires).
        """
        if self.batch_expire_fraction and self.batch_draw("expire", custom_id, attempt) < self.batch_expire_fraction:
            return "unfinished"
        if self.batch_item_failure_rate and self.batch_draw("fail", custom_id, attempt) < self.batch_item_failure_rate:
            return "failed"
        return "ok"


class Reply(NamedTuple):
    """What a successful response says, computed from the request alone."""

    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def prompt_words(messages: list[dict[str, Any]]) -> list[str]:
    """The prompt's tokens: the whitespace-separated words of every message's text, in order."""
    return [word for m in messages if isinstance(m, dict) for word in _text(m.get("content")).split()]


def reply_for(messages: list[dict[str, Any]], max_tokens: int | None = None) -> Reply:
    """The server's answer rule, public so tests and benchmarks can check replies.

    Content is ``ANSWER: <crc32(last user message) % 100>``, cut to ``max_tokens`` words; tokens
    are whitespace-separated words (prompt: all messages' words, at least 1).
    """
    prompt_tokens = max(1, len(prompt_words(messages)))
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last_user = _text(users[-1].get("content")) if users else ""
    words = ["ANSWER:", str(zlib.crc32(last_user.encode()) % 100)]
    finish_reason = "stop"
    if max_tokens is not None and max_tokens < len(words):
        words, finish_reason = words[: max(max_tokens, 0)], "length"
    return Reply(" ".join(words), finish_reason, prompt_tokens, len(words))


class _BadRequest(Exception):
    """The bytes on the wire are not an HTTP request we can answer; the connection is closed."""


class _Request(NamedTuple):
    method: str
    path: str
    keep_alive: bool
    body: bytes
    content_type: str = ""


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One request off a keep-alive connection, or None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("connection closed inside the request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise _BadRequest(f"bad request line {lines[0]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    return _Request(method, target.split("?", 1)[0], keep_alive, body, headers.get("content-type", ""))


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            # Trailers (rare) end with an empty line like the head does.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _head(
    status: int, length: int, keep_alive: bool, extra: str = "", content_type: str = "application/json"
) -> bytes:
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n{extra}Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode()


def _response(
    status: int, body: bytes, keep_alive: bool, extra: str = "", content_type: str = "application/json"
) -> bytes:
    return _head(status, len(body), keep_alive, extra, content_type) + body


def _error_object(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _error(message: str, type_: str, code: str | None = None) -> bytes:
    return json.dumps(_error_object(message, type_, code)).encode()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _chat_payload_error(payload: Any) -> str | None:
    """Why the online endpoint answers 400 to this parsed chat request body, or None."""
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    if not isinstance(payload.get("messages"), list):
        return "messages must be a list"
    if payload.get("stream"):
        return "the fake server does not stream"
    return None


class _ApiError(Exception):
    """An OpenAI-style error answer from the files and batches routes."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code

    def body(self) -> bytes:
        return _error(str(self), "invalid_request_error", self.code)


# --- multipart/form-data ----------------------------------------------------------------------


class FormField(NamedTuple):
    filename: str | None
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> dict[str, FormField]:
    """The fields of a multipart/form-data body by name; ValueError when it is not well formed.

    Parts are split on CRLF + ``--boundary`` (RFC 2046), so the boundary string inside a part's
    bytes is harmless unless it starts a line; the boundary and the part headers' parameters
    (``name``, ``filename``, RFC 2231 included) are read with the stdlib email header parser.
    """
    header = email.message.Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise ValueError(f"expected multipart/form-data, got {content_type or 'no content type'!r}")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("multipart/form-data without a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + body).split(delimiter)
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        raise ValueError("multipart body without its closing boundary")
    fields: dict[str, FormField] = {}
    for piece in pieces[1:-1]:
        line_end = piece.find(b"\r\n")
        if line_end < 0 or piece[:line_end].strip(b" \t"):
            raise ValueError("malformed multipart boundary line")
        head, sep, data = piece[line_end + 2 :].partition(b"\r\n\r\n")
        if not sep or not head:
            raise ValueError("multipart part without headers and the blank line after them")
        part = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"malformed multipart header {line!r}")
            part[name.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        if part.get_content_disposition() != "form-data" or not isinstance(name, str) or not name:
            raise ValueError("multipart part without Content-Disposition: form-data; name=...")
        fields[name] = FormField(part.get_filename(), data)
    return fields


# --- prefix caching ---------------------------------------------------------------------------


class PrefixCache:
    """OpenAI's prompt prefix caching over word tokens, bounded.

    Keeps a hash of every 128-token block prefix of a recorded prompt, from 1,024 tokens up, with
    when it was last seen; an OrderedDict in that order, so expiry and eviction pop the front.
    """

    def __init__(self, max_entries: int = PREFIX_CACHE_MAX_ENTRIES):
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def lookup_and_record(self, words: list[str], ttl_s: float, now: float) -> int:
        """The cached tokens for a prompt of these tokens at ``now``; then remember its prefixes."""
        if ttl_s <= 0 or len(words) < PREFIX_CACHE_MIN_TOKENS:
            return 0
        while self._seen and next(iter(self._seen.values())) < now - ttl_s:
            self._seen.popitem(last=False)
        keys: list[tuple[int, bytes]] = []
        digest = b""
        for end in range(PREFIX_CACHE_BLOCK, len(words) + 1, PREFIX_CACHE_BLOCK):
            block = " ".join(words[end - PREFIX_CACHE_BLOCK : end]).encode()
            digest = hashlib.blake2b(digest + block, digest_size=16).digest()  # chained: a prefix hash
            if end >= PREFIX_CACHE_MIN_TOKENS:
                keys.append((end, digest))
        cached = max((end for end, key in keys if key in self._seen), default=0)
        for _, key in keys:
            self._seen[key] = now
            self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return cached


# --- files and batches ------------------------------------------------------------------------


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class _Item(NamedTuple):
    custom_id: str
    body: dict[str, Any]
    attempt: int  # submissions of this custom_id before this one


@dataclass
class _Batch:
    id: str
    config: FaultConfig  # the server's config at creation: delay, failure rate, expiry
    input_file_id: str
    completion_window: str
    metadata: dict[str, Any] | None
    items: list[_Item]
    created_wall: float
    created_mono: float
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)  # in_progress_at, completed_at, ...
    done_at_cancel: frozenset[str] = frozenset()
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0

    def at(self, fraction_of_delay: float) -> int:
        return int(self.created_wall + fraction_of_delay * self.config.batch_delay_s)

    def to_api(self) -> dict[str, Any]:
        models = {str(item.body.get("model")) for item in self.items if "model" in item.body}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "model": models.pop() if len(models) == 1 else None,
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_wall),
            "in_progress_at": self.times.get("in_progress_at"),
            "expires_at": int(self.created_wall) + 24 * 3600,
            "finalizing_at": self.times.get("finalizing_at"),
            "completed_at": self.times.get("completed_at"),
            "failed_at": None,
            "expired_at": self.times.get("expired_at"),
            "cancelling_at": self.times.get("cancelling_at"),
            "cancelled_at": self.times.get("cancelled_at"),
            "request_counts": {"total": len(self.items), "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


class FakeOpenAI:
    """The server's state and request handling, independent of how it is run."""

    def __init__(self, config: FaultConfig | None = None):
        # Only update_config changes it, never max_concurrency: the semaphore is sized from it here.
        self.config = config or FaultConfig()
        self._semaphore = asyncio.Semaphore(self.config.max_concurrency) if self.config.max_concurrency else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._completion_ids = 0
        self.in_flight = 0
        self.waiting = 0
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the freshly started state, so a rerun draws the same faults."""
        self.requests = 0
        self.bad_requests = 0
        self.connections = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.in_flight_max = self.in_flight  # requests still being served keep counting
        self._attempts: dict[bytes, int] = {}
        self._rng = random.Random(self.config.seed)
        self.files_uploaded = 0
        self.batches_created = 0
        self.batch_items_submitted: dict[str, int] = {}
        self.batch_item_outcomes = dict.fromkeys(("completed", "failed", "expired", "cancelled"), 0)
        self.cached_prompt_tokens = 0
        self.prefix_cache_hits = 0
        self.prefix_cache = PrefixCache()

    def stats(self) -> dict[str, Any]:
        submitted = self.batch_items_submitted
        return {
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "in_flight": self.in_flight,
            "in_flight_max": self.in_flight_max,
            "waiting": self.waiting,
            "connections": self.connections,
            "bad_requests": self.bad_requests,
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "batch_items_submitted": dict(submitted),
            "batch_items_submitted_total": sum(submitted.values()),
            "batch_items_submitted_max": max(submitted.values(), default=0),
            "batch_item_outcomes": dict(self.batch_item_outcomes),
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "prefix_cache_hits": self.prefix_cache_hits,
        }

    def update_config(self, **changes: Any) -> FaultConfig:
        """Change config fields from now on (validated as a whole); batches keep the config they were created under.

        ``max_concurrency`` cannot change (the semaphore is sized at start); a new ``seed`` takes
        effect for arrival-order draws at the next :meth:`reset`.
        """
        config = FaultConfig.model_validate({**self.config.model_dump(), **changes})
        if config.max_concurrency != self.config.max_concurrency:
            raise ValueError("max_concurrency is fixed for the server's life")
        self.config = config
        return config

    def _draw(self, body: bytes) -> str:
        if not self.config.deterministic:
            return self.config.outcome_for(self._rng.random())
        # A pure function of (seed, body, attempt): concurrent arrival order does not matter, and
        # a retry of the same body is a fresh draw, so retries can succeed.
        # The counter keeps one small entry per distinct body: fine for test and benchmark runs.
        digest = hashlib.blake2b(body, digest_size=16).digest()
        attempt = self._attempts.get(digest, 0)
        self._attempts[digest] = attempt + 1
        draw = hashlib.blake2b(f"{self.config.seed}:{attempt}:".encode() + digest, digest_size=8).digest()
        return self.config.outcome_for(int.from_bytes(draw, "little") / 2**64)

    async def serve(self, host: str, port: int, on_ready: Callable[[int], None], stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set, then close every connection (slow handlers included)."""
        # A deep backlog: a benchmark opens hundreds of connections at once, and an overflowing
        # SYN queue shows up as one-second stalls that would be blamed on the client.
        server = await asyncio.start_server(self._connection, host, port, backlog=2048)
        on_ready(server.sockets[0].getsockname()[1])
        try:
            await stop.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.connections += 1
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._dispatch(request, writer):
                    break
        except (_BadRequest, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.bad_requests += 1
        except ConnectionError:
            pass  # the client went away (e.g. it timed out on a slow response)
        except asyncio.CancelledError:
            # Only serve() cancels, at shutdown. Ending normally rather than re-raising keeps
            # Python 3.11's stream callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _dispatch(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        path = request.path[3:] if request.path.startswith("/v1/") else request.path
        route = (request.method, path)
        if route == ("POST", "/chat/completions"):
            return await self._chat(request, writer)
        content_type = "application/json"
        if path in ("/files", "/batches", "/config") or path.startswith(("/files/", "/batches/")):
            try:
                answer = self._api(request.method, path, request)
            except _ApiError as exc:
                self.bad_requests += exc.status == 400
                status, body = exc.status, exc.body()
            else:
                status, body = 200, answer if isinstance(answer, bytes) else _json(answer)
                content_type = "application/octet-stream" if isinstance(answer, bytes) else content_type
        elif route == ("GET", "/models"):
            status, body = 200, _MODELS_BODY
        elif route == ("GET", "/health"):
            status, body = 200, b'{"status":"ok"}'
        elif route == ("GET", "/stats"):
            status, body = 200, json.dumps(self.stats()).encode()
        elif route == ("POST", "/stats/reset"):
            self.reset()
            status, body = 200, b'{"reset":true}'
        else:
            status, body = 404, _error(f"no route {request.method} {request.path}", "invalid_request_error")
        writer.write(_response(status, body, request.keep_alive, content_type=content_type))
        await writer.drain()
        return request.keep_alive

    async def _chat(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        keep_alive = request.keep_alive
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            payload, problem = None, f"bad request body: {exc}"
        else:
            problem = _chat_payload_error(payload)
            if problem is not None and problem != "the fake server does not stream":
                problem = f"bad request body: {problem}"
        if problem is not None:
            self.bad_requests += 1
            writer.write(_response(400, _error(problem, "invalid_request_error"), keep_alive))
            await writer.drain()
            return keep_alive
        assert isinstance(payload, dict)

        self.requests += 1
        self.waiting += 1
        if self._semaphore is not None:
            await self._semaphore.acquire()
        self.waiting -= 1
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            # Drawn after the queue: with a cap, the arrival order at the slot decides the draw.
            outcome = self._draw(request.body)
            self.outcomes[outcome] += 1
            return await self._answer(outcome, payload, keep_alive, writer)
        finally:
            self.in_flight -= 1
            if self._semaphore is not None:
                self._semaphore.release()

    async def _answer(
        self, outcome: str, payload: dict[str, Any], keep_alive: bool, writer: asyncio.StreamWriter
    ) -> bool:
        cfg = self.config
        if outcome == "dropped":
            writer.transport.abort()
            return False
        if outcome == "429":
            body = _error("Rate limit reached (injected by the fake server)", "requests", "rate_limit_exceeded")
            writer.write(_response(429, body, keep_alive, f"Retry-After: {cfg.retry_after_s:g}\r\n"))
            await writer.drain()
            return keep_alive
        if outcome == "500":
            body = _error("The server had an error (injected by the fake server)", "server_error")
            writer.write(_response(500, body, keep_alive))
            await writer.drain()
            return keep_alive

        await asyncio.sleep(cfg.slow_s if outcome == "slow" else cfg.latency_s)
        body = self._completion(payload)
        if outcome == "truncated":
            writer.write(_head(200, len(body), False) + body[: len(body) // 2])
            await writer.drain()
            return False
        if outcome == "malformed":
            body = body[: len(body) // 2]  # a JSON object that never closes
        writer.write(_response(200, body, keep_alive))
        await writer.drain()
        return keep_alive

    def _completion(self, payload: dict[str, Any]) -> bytes:
        return _json(self._completion_object(payload))

    def _completion_object(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The chat.completion for a valid request; looks the prompt up in the prefix cache and records it."""
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
        reply = reply_for(payload["messages"], max_tokens if isinstance(max_tokens, int) else None)
        cached = self.prefix_cache.lookup_and_record(
            prompt_words(payload["messages"]), self.config.prefix_cache_ttl_s, time.monotonic()
        )
        self.cached_prompt_tokens += cached
        self.prefix_cache_hits += cached > 0
        self._completion_ids += 1
        return {
            "id": f"chatcmpl-fake-{self._completion_ids}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(payload.get("model", "fake")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    # --- files, batches, config ---------------------------------------------------------------

    def _api(self, method: str, path: str, request: _Request) -> dict[str, Any] | bytes:
        """The 200 answer of a files, batches or config route (raw bytes: a file's content); raises _ApiError."""
        parts = path.strip("/").split("/")
        route = (method, parts[0], len(parts))
        if route == ("POST", "config", 1):
            try:
                return self.update_config(**self._json_object(request.body)).model_dump()
            except (ValidationError, ValueError) as exc:
                raise _ApiError(400, f"bad config: {exc}") from exc
        if route == ("POST", "files", 1):
            return self._upload(request).to_api()
        if route == ("GET", "files", 1):
            files = [f.to_api() for f in reversed(self.files.values())]  # newest first
            return {"object": "list", "data": files, "has_more": False}
        if route == ("GET", "files", 2):
            return self._file(parts[1]).to_api()
        if route == ("DELETE", "files", 2):
            self._file(parts[1])
            del self.files[parts[1]]
            return {"id": parts[1], "object": "file", "deleted": True}
        if route == ("GET", "files", 3) and parts[2] == "content":
            return self._file(parts[1]).data
        if route == ("POST", "batches", 1):
            return self._create_batch(self._json_object(request.body)).to_api()
        if route == ("GET", "batches", 1):
            batches = list(reversed(self.batches.values()))  # newest first
            for batch in batches:
                self._advance(batch)
            data = [b.to_api() for b in batches]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}
        if route == ("GET", "batches", 2):
            batch = self._batch(parts[1])
            self._advance(batch)
            return batch.to_api()
        if route == ("POST", "batches", 3) and parts[2] == "cancel":
            return self._cancel(self._batch(parts[1])).to_api()
        raise _ApiError(404, f"no route {method} {request.path}")

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body or b"{}")
        except ValueError as exc:
            raise _ApiError(400, f"bad request body: {exc}") from exc
        if not isinstance(value, dict):
            raise _ApiError(400, "bad request body: expected a JSON object")
        return value

    def _file(self, file_id: str) -> _File:
        if file_id not in self.files:
            raise _ApiError(404, f"No such File object: {file_id}")
        return self.files[file_id]

    def _batch(self, batch_id: str) -> _Batch:
        if batch_id not in self.batches:
            raise _ApiError(404, f"No such Batch object: {batch_id}")
        return self.batches[batch_id]

    def _store(self, data: bytes, filename: str, purpose: str) -> _File:
        stored = _File(f"file-{secrets.token_hex(12)}", filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def _upload(self, request: _Request) -> _File:
        try:
            fields = parse_multipart(request.body, request.content_type)
        except ValueError as exc:
            raise _ApiError(400, f"bad file upload: {exc}") from exc
        if "file" not in fields or "purpose" not in fields:
            raise _ApiError(400, "a file upload needs the multipart fields 'file' and 'purpose'")
        purpose = fields["purpose"].data.decode("utf-8", "replace").strip()
        if purpose not in _UPLOAD_PURPOSES:
            raise _ApiError(400, f"invalid purpose {purpose!r}, expected one of {sorted(_UPLOAD_PURPOSES)}")
        stored = self._store(fields["file"].data, fields["file"].filename or "upload", purpose)
        self.files_uploaded += 1
        return stored

    def _create_batch(self, request: dict[str, Any]) -> _Batch:
        input_file_id = request.get("input_file_id")
        if not isinstance(input_file_id, str):
            raise _ApiError(400, "input_file_id is required")
        if request.get("endpoint") != BATCH_ENDPOINT:
            raise _ApiError(400, f"the fake server batches only {BATCH_ENDPOINT}, not {request.get('endpoint')!r}")
        if request.get("completion_window") != "24h":
            raise _ApiError(400, f"completion_window must be '24h', not {request.get('completion_window')!r}")
        metadata = request.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise _ApiError(400, "metadata must be an object")
        source = self._file(input_file_id)
        if source.purpose != "batch":
            raise _ApiError(400, f"file {input_file_id} has purpose {source.purpose!r}, not 'batch'", "invalid_file")
        items = self._batch_items(source.data)
        for custom_id, _ in items:
            self.batch_items_submitted[custom_id] = self.batch_items_submitted.get(custom_id, 0) + 1
        batch = _Batch(
            id=f"batch_{secrets.token_hex(12)}",
            config=self.config,
            input_file_id=input_file_id,
            completion_window="24h",
            metadata=metadata,
            items=[_Item(cid, body, self.batch_items_submitted[cid] - 1) for cid, body in items],
            created_wall=time.time(),
            created_mono=time.monotonic(),
        )
        self.batches[batch.id] = batch
        self.batches_created += 1
        return batch

    @staticmethod
    def _batch_items(data: bytes) -> list[tuple[str, dict[str, Any]]]:
        """(custom_id, body) per line of a batch input file; _ApiError 400 for a bad file."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _ApiError(400, f"the input file is not UTF-8: {exc}", "invalid_file") from exc
        items: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise _ApiError(400, f"line {number} of the input file is not JSON: {exc}", "invalid_file") from exc
            if not isinstance(row, dict):
                raise _ApiError(400, f"line {number} of the input file is not a JSON object", "invalid_file")
            custom_id = row.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                raise _ApiError(400, f"line {number}: custom_id must be a non-empty string", "invalid_file")
            if custom_id in seen:
                raise _ApiError(400, f"line {number}: duplicate custom_id {custom_id!r}", "duplicate_custom_id")
            if row.get("method") != "POST":
                raise _ApiError(400, f"line {number}: method must be 'POST'", "invalid_file")
            if row.get("url") != BATCH_ENDPOINT:
                raise _ApiError(400, f"line {number}: url must be {BATCH_ENDPOINT!r}", "invalid_file")
            if not isinstance(row.get("body"), dict):
                raise _ApiError(400, f"line {number}: body must be a JSON object", "invalid_file")
            seen.add(custom_id)
            items.append((custom_id, row["body"]))
        if not items:
            raise _ApiError(400, "the input file has no request", "invalid_file")
        return items

    def _advance(self, batch: _Batch) -> None:
        """Bring the batch's status up to now; runs its items when it finishes."""
        if batch.status in _FINAL_BATCH_STATUSES:
            return
        now = time.monotonic()
        delay = batch.config.batch_delay_s
        if batch.status == "cancelling":  # the cancel answered "cancelling"; any later read finds it cancelled
            self._finish(batch, "cancelled")
            return
        elapsed = now - batch.created_mono
        if elapsed >= delay:
            self._finish(batch, "expired" if batch.config.batch_expire_fraction > 0 else "completed")
        elif elapsed >= delay / 10:
            batch.status = "in_progress"
            batch.times.setdefault("in_progress_at", batch.at(0.1))

    def _cancel(self, batch: _Batch) -> _Batch:
        self._advance(batch)
        if batch.status in _FINAL_BATCH_STATUSES:
            raise _ApiError(400, f"Cannot cancel a batch with status {batch.status!r}.")
        now = time.monotonic()
        delay = batch.config.batch_delay_s
        # Share of the in_progress phase (d/10 .. d) elapsed: items whose progress draw is below it are done.
        progress = min(1.0, max(0.0, (now - batch.created_mono - delay / 10) / (0.9 * delay))) if delay else 1.0
        batch.done_at_cancel = frozenset(
            item.custom_id
            for item in batch.items
            if batch.config.batch_draw("progress", item.custom_id, item.attempt) < progress
        )
        if progress > 0:
            batch.times.setdefault("in_progress_at", batch.at(0.1))
        batch.status = "cancelling"
        batch.times["cancelling_at"] = int(time.time())
        return batch

    def _finish(self, batch: _Batch, status: str) -> None:
        """Run the batch's items that get to run, write its files, set its final status."""
        config = batch.config
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in batch.items:
            line_id = f"batch_req_{secrets.token_hex(12)}"
            fate = config.batch_item_fate(item.custom_id, item.attempt)
            if status == "cancelled" and item.custom_id not in batch.done_at_cancel:
                self.batch_item_outcomes["cancelled"] += 1
                continue
            if status == "expired" and fate == "unfinished":
                self.batch_item_outcomes["expired"] += 1
                error = {"code": "batch_expired", "message": _EXPIRED_MESSAGE}
                errors.append({"id": line_id, "custom_id": item.custom_id, "response": None, "error": error})
                continue
            problem = _chat_payload_error(item.body)
            if problem is not None:
                code, body = 400, _error_object(f"bad request body: {problem}", "invalid_request_error")
            elif fate == "failed":
                code, body = 500, _error_object("The server had an error (injected by the fake server)", "server_error")
            else:
                code, body = 200, self._completion_object(item.body)
            response = {"status_code": code, "request_id": f"req_{secrets.token_hex(16)}", "body": body}
            line = {"id": line_id, "custom_id": item.custom_id, "response": response, "error": None}
            if code == 200:
                outputs.append(line)
            else:
                errors.append(line)
            self.batch_item_outcomes["completed" if code == 200 else "failed"] += 1
        batch.completed = len(outputs)
        batch.failed = sum(1 for line in errors if line["response"] is not None)
        end = batch.at(1.0) if status != "cancelled" else int(time.time())
        if status != "cancelled":
            batch.times.setdefault("in_progress_at", batch.at(0.1))
            batch.times["finalizing_at"] = end
        batch.times[f"{status}_at"] = end

        def jsonl(lines: list[dict[str, Any]]) -> bytes:
            return b"".join(_json(line) + b"\n" for line in lines)

        batch.output_file_id = self._store(jsonl(outputs), f"{batch.id}_output.jsonl", "batch_output").id
        if errors:
            batch.error_file_id = self._store(jsonl(errors), f"{batch.id}_error.jsonl", "batch_output").id
        batch.status = status


class FakeOpenAIServer:
    """The fake server on a background thread with its own event loop; a context manager.

    >>> with FakeOpenAIServer(FaultConfig(latency_s=0, rate_429=0.5)) as server:
    ...     litellm.completion(model="openai/fake", api_base=server.base_url, api_key="x", ...)
    """

    def __init__(self, config: FaultConfig | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.config = config or FaultConfig()
        self.host = host
        self.port = port
        self._app: FakeOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 10.0) -> FakeOpenAIServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def on_ready(port: int) -> None:
            self.port = port
            ready.set()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._app = FakeOpenAI(self.config)  # built on this loop, where its semaphore lives
            await self._app.serve(self.host, self.port, on_ready, self._stop)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported to start(), which re-raises it
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"fake OpenAI server did not start in {timeout_s} s")
        if failure:
            raise RuntimeError("fake OpenAI server failed to start") from failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def _call(self, fn: Callable[[], Any]) -> Any:
        # Read and reset on the server's own loop, so a snapshot is never half-updated.
        assert self._loop is not None, "server not started"

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def stats(self) -> dict[str, Any]:
        assert self._app is not None, "server not started"
        return self._call(self._app.stats)  # type: ignore[no-any-return]

    def reset(self) -> None:
        assert self._app is not None, "server not started"
        self._call(self._app.reset)

    def update_config(self, **changes: Any) -> FaultConfig:
        """Change config fields on the running server (see :meth:`FakeOpenAI.update_config`)."""
        assert self._app is not None, "server not started"
        app = self._app
        self.config = self._call(lambda: app.update_config(**changes))
        return self.config

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- the subprocess ---------------------------------------------------------------------------

READY_PREFIX = "listening on "


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_to_args(config: FaultConfig) -> list[str]:
    """Command-line flags that rebuild ``config`` in the subprocess (every field, explicitly)."""
    args: list[str] = []
    for name in FaultConfig.model_fields:
        value = getattr(config, name)
        if isinstance(value, bool):
            args.append(_flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            args += [_flag(name), str(value)]  # str(float) round-trips exactly
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sleeptime.testing.fake_openai", description="Local OpenAI-compatible fake with fault injection."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one, printed when ready)")
    parser.add_argument("--latency-ms", type=float, help="latency_s in milliseconds")
    # One flag per FaultConfig field, generated so a new field cannot be forgotten here; defaults
    # stay None so FaultConfig's own defaults and validation apply.
    for name, info in FaultConfig.model_fields.items():
        kind: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction} if info.annotation is bool else {"type": info.annotation}
        )
        parser.add_argument(_flag(name), default=None, help=info.description, **kind)
    return parser


def config_from_args(argv: list[str] | None = None) -> tuple[FaultConfig, str, int]:
    parser = _parser()
    args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in FaultConfig.model_fields if getattr(args, name) is not None}
    if args.latency_ms is not None:
        if "latency_s" in values:
            parser.error("give --latency-ms or --latency-s, not both")
        values["latency_s"] = args.latency_ms / 1000
    try:
        config = FaultConfig(**values)
    except ValidationError as exc:
        parser.error(str(exc))
    return config, args.host, args.port


async def _serve_until_signalled(config: FaultConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await FakeOpenAI(config).serve(
        host, port, lambda bound: print(f"{READY_PREFIX}http://{host}:{bound}/v1", flush=True), stop
    )


def main(argv: list[str] | None = None) -> None:
    config, host, port = config_from_args(argv)
    asyncio.run(_serve_until_signalled(config, host, port))


@contextlib.contextmanager
def spawn_server(
    config: FaultConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 30.0,
    python: str = sys.executable,
) -> Iterator[str]:
    """Run the fake server in a subprocess; yields its base URL; terminates it on exit."""
    cmd = [python, "-m", "sleeptime.testing.fake_openai", "--host", host, "--port", str(port)]
    cmd += config_to_args(config or FaultConfig())
    # stderr is inherited, so a crash at start shows its traceback.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        yield _wait_ready(proc, startup_timeout_s)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> str:
    # readline() blocks with no timeout of its own; a daemon thread gives it one.
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError(f"fake OpenAI server printed nothing in {timeout_s} s") from None
    if not line.startswith(READY_PREFIX):
        raise RuntimeError(f"fake OpenAI server did not start (exit code {proc.poll()}): {line!r}")
    return line[len(READY_PREFIX) :].strip()


if __name__ == "__main__":
    main()
