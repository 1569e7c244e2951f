"""Reaching models: the gateway (litellm underneath), model specs and the providers we ship."""

from sleeptime.model._cache import CachePolicy, ResponseCache, request_key
from sleeptime.model._gateway import Completion, ModelError, ModelGateway, continuation_logprob, price
from sleeptime.model._ratelimit import RateLimiter
from sleeptime.model._registry import MissingCredentialsError, check_credentials, load_registry
from sleeptime.model._spec import (
    QWEN_CODER_05B,
    QWEN_CODER_15B,
    REFERENCE_MODEL,
    SMOLLM2_LOCAL,
    BudgetParams,
    LocalServerSpec,
    ModelSpec,
)

__all__ = ["CachePolicy", "ResponseCache", "request_key", "Completion", "ModelError", "ModelGateway", "ModelSpec", "REFERENCE_MODEL", "price",
           "BudgetParams", "LocalServerSpec", "SMOLLM2_LOCAL", "QWEN_CODER_15B", "QWEN_CODER_05B", "load_registry", "check_credentials",
           "MissingCredentialsError", "RateLimiter", "continuation_logprob"]
