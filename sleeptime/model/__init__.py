"""Reaching models: the gateway (litellm underneath), model specs and the providers we ship."""

from sleeptime.model._gateway import Completion, ModelError, ModelGateway, price
from sleeptime.model._spec import REFERENCE_MODEL, ModelSpec

__all__ = ["Completion", "ModelError", "ModelGateway", "ModelSpec", "REFERENCE_MODEL", "price"]
