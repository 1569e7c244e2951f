"""Token counting that works offline.

tiktoken downloads its encodings on first use; litellm ships cl100k_base inside its wheel, so
point tiktoken's cache there (without importing litellm, which costs seconds).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _encoding():
    spec = importlib.util.find_spec("litellm")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
        if bundled.is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    """Tokens of ``text`` under cl100k_base, the tokenizer litellm falls back to."""
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))
