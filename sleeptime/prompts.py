"""Versioned prompts for sleep time and test time, answer extraction and scoring.

The texts follow the published design (../shared/method.md): sleep time rewrites a memory block
after "[trigger_rethink_memory] New situation:"; test time sees the context, the memory block
and the question, with one of five verbosity instructions. ``PROMPT_VERSION`` is a hash of the
messages these functions build, so any change to a text or to how messages are assembled changes
it: variants and answers are keyed by it, and a rerun recomputes exactly what the change touched.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

SLEEP_TRIGGER = "[trigger_rethink_memory]"
MEMORY_LIMIT_CHARS = 5000

SLEEP_SYSTEM = (
    "You are a sleep-time reasoning agent. While no one is waiting, you study a context that users will "
    "ask about later, and you keep a memory block of what will help answer their questions quickly. "
    "Brainstorm the many kinds of questions users could ask about this context: lookups, quantities that "
    "must be derived through several steps, totals and comparisons, and what-if changes."
)

SLEEP_USER = (
    SLEEP_TRIGGER
    + " New situation:\n{context}\n\n"
    "Rewrite your memory block for this context as notes. Write useful quantities, inferences, "
    "calculations and reasoning to prepare for future questions. Write one derived fact per line, show the "
    "calculation that gives each value, and derive the quantities that others depend on first. Then list "
    "the questions users are most likely to ask, each with its answer. Write notes, not more story: a "
    "reader must never mistake a note for a new event. Do not repeat the context. Keep the memory block "
    f"under {MEMORY_LIMIT_CHARS} characters."
)

# The five published test-time verbosity levels, cheapest first.
# "where N is the number": Qwen2.5-Coder-0.5B answered a literal "The answer is N." to the bare
# published wording (bench/results/real_llm_quick.md).
_END = 'end with the sentence "The answer is N." where N is the number'
VERBOSITY_INSTRUCTIONS: tuple[str, ...] = (
    'Respond directly with a single sentence: "The answer is N." where N is the number.',
    f"Answer briefly: show only the minimal working, then {_END}.",
    f"Show your working one step per line, then {_END}.",
    f"Explain your reasoning step by step, naming the fact each step uses, then {_END}.",
    f"Explain each step in detail, recompute and double-check every step, then {_END}.",
)

TEST_SYSTEM = (
    "You answer questions about a context. When notes prepared in advance are given, use the values they "
    "already state and do not recompute them."
)

NOTES_HEADER = "Notes prepared in advance (already computed; do not recompute what they state):"


def sleep_messages(context_text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SLEEP_SYSTEM},
        {"role": "user", "content": SLEEP_USER.format(context=context_text)},
    ]


def answer_messages(context_text: str, question: str, verbosity: int, notes: str | None = None,
                    cache_breakpoint: bool = False) -> list[dict]:
    """The test-time prompt, ordered for prefix caching: the fixed system text, then the context
    (and c'), which every question on that context shares, then the question and the verbosity
    instruction, which differ per call. Providers cache a prompt's longest seen prefix (OpenAI
    automatically from 1,024 tokens); with the instruction in the system text, each test budget
    started a different prefix.

    ``cache_breakpoint`` (Anthropic's explicit caching, through litellm) gives the user message as
    two text parts, the shared one marked ``cache_control: ephemeral``; the text is the same."""
    if not 0 <= verbosity < len(VERBOSITY_INSTRUCTIONS):
        raise ValueError(f"verbosity must be 0..{len(VERBOSITY_INSTRUCTIONS) - 1}, got {verbosity}")
    shared = [f"Context:\n{context_text}"]
    if notes:
        shared.append(f"{NOTES_HEADER}\n{notes}")
    prefix = "\n\n".join(shared) + "\n\n"
    tail = f"Question: {question}\n\n{VERBOSITY_INSTRUCTIONS[verbosity]}"
    if cache_breakpoint:
        user: str | list[dict] = [{"type": "text", "text": prefix, "cache_control": {"type": "ephemeral"}},
                                  {"type": "text", "text": tail}]
    else:
        user = prefix + tail
    return [{"role": "system", "content": TEST_SYSTEM}, {"role": "user", "content": user}]


def _prompt_version() -> str:
    """sha256 of every message shape the prompts produce, rendered with placeholder inputs."""
    shapes = [sleep_messages("<context>")] + [
        answer_messages("<context>", "<question>", v, notes) for v in range(len(VERBOSITY_INSTRUCTIONS))
        for notes in (None, "<notes>")
    ]
    blob = json.dumps([shapes, MEMORY_LIMIT_CHARS], sort_keys=True, ensure_ascii=False)
    return "p-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


PROMPT_VERSION = _prompt_version()


def clip_memory(text: str) -> str:
    """The published memory block holds at most 5,000 characters; cut at a line boundary."""
    if len(text) <= MEMORY_LIMIT_CHARS:
        return text
    cut = text[:MEMORY_LIMIT_CHARS]
    return cut[: cut.rfind("\n")] if "\n" in cut else cut


# --- answer extraction and scoring, as published ---------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# "The answer is 42", "The answer is: **$1,200**", "Answer: 42", "**Final answer:** 42 marbles".
_ANSWER_IS = re.compile(r"answer(?:\s+is|\s*[:=])[\s:*_$]*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_AIME_INT = re.compile(r"(?<!\d)(\d{1,3})(?!\d)")


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _clean(reply: str) -> str:
    """Drop "$" and thousands separators ("1,234"); a comma in "3,4" or "3, 4" separates numbers."""
    return _THOUSANDS.sub("", reply.replace("$", ""))


def normalize_number(value: str) -> str | None:
    """"17", "17.0", "17." and "$1,700" compare equal after this."""
    s = _clean(value).strip().rstrip(".")
    try:
        number = float(s)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


def extract_answer(reply: str, style: Literal["gsm", "aime"] = "gsm") -> str | None:
    """The final answer in a reply, or None.

    gsm: the last number after removing "$", "," and a trailing period (as published), preferring
    an explicit "The answer is N". aime: the \\boxed{} value, else the last 1-3 digit integer.
    """
    if style == "aime":
        boxed = _BOXED.findall(reply)
        if boxed:
            return normalize_number(boxed[-1])
        ints = _AIME_INT.findall(_clean(reply))
        return normalize_number(ints[-1]) if ints else None
    explicit = _ANSWER_IS.findall(reply)
    if explicit:
        return normalize_number(explicit[-1])
    if re.search(r"answer is\s*:?\s*unknown", reply, re.IGNORECASE):
        return None
    boxed = _BOXED.findall(reply)
    if boxed and normalize_number(boxed[-1]) is not None:
        return normalize_number(boxed[-1])
    # A code block's numbers are the program's, not its result: look outside first.
    prose = _CODE_BLOCK.sub(" ", reply)
    numbers = _NUMBER.findall(_clean(prose)) or _NUMBER.findall(_clean(reply))
    return normalize_number(numbers[-1]) if numbers else None


def score(parsed: str | None, gold: str | None) -> bool | None:
    """Exact match of the final number; None when there is no gold answer."""
    if gold is None:
        return None
    gold_norm = normalize_number(gold)
    return parsed is not None and gold_norm is not None and parsed == gold_norm
