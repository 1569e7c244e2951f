import os

import pytest

from sleeptime.prompts import (
    MEMORY_LIMIT_CHARS,
    SLEEP_TRIGGER,
    VERBOSITY_INSTRUCTIONS,
    clip_memory,
    extract_answer,
    normalize_number,
    score,
    sleep_messages,
    answer_messages,
)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is 17.", "17"),
        ("Leo has 14 + 3 = 17 marbles.\nThe answer is 17.", "17"),
        ("So she pays $1,250.", "1250"),
        ("first 3 then 4.5", "4.5"),
        ("The answer is unknown.", None),
        ("no numbers here", None),
        ("The answer is 12. Ben has 20 marbles.", "12"),
    ],
)
def test_extract_answer_gsm(reply, expected):
    assert extract_answer(reply) == expected


def test_extract_answer_aime():
    assert extract_answer("so \\boxed{073} done 5", style="aime") == "73"
    assert extract_answer("the result is 1234 or 56", style="aime") == "56"


def test_score_is_exact_numeric_match():
    assert score("17", "17.0") is True
    assert score("17", "18") is False
    assert score(None, "18") is False
    assert score("17", None) is None
    assert normalize_number("$1,700.") == "1700"


def test_prompts_carry_the_published_markers():
    msgs = sleep_messages("Mia has 3 apples.")
    assert msgs[-1]["content"].startswith(SLEEP_TRIGGER + " New situation:\nMia has 3 apples.")
    for level, instruction in enumerate(VERBOSITY_INSTRUCTIONS):
        text = "\n".join(m["content"] for m in answer_messages("c", "q?", level, notes="n"))
        assert instruction in text and "Notes prepared in advance" in text
    with pytest.raises(ValueError):
        answer_messages("c", "q", 5)


def test_memory_is_clipped_at_a_line():
    text = "\n".join(["x" * 99] * 100)
    clipped = clip_memory(text)
    assert len(clipped) <= MEMORY_LIMIT_CHARS and clipped.endswith("x")


@pytest.mark.parametrize("reply, expected", [
    ("Leo has 12 + 30 = 42 marbles.\nThe answer is 42.", "42"),
    ("Answer: 42", "42"),
    ("**Final answer:** 1,234 marbles", "1234"),
    ("The answer is **17**.", "17"),
    ("So the total is \\boxed{12}", "12"),
    ("```python\nmia = 5\nleo = mia * 2\nprint(leo)\n```\nLeo has 10 apples.", "10"),
    ("```python\na = 5\nprint(a * 2)\n```", "2"),  # only code: its last number, for want of better
    ("Mia has 3,4 or 5 shells; she has 5.", "5"),  # "3,4" is a list, not three thousand and four
    ("The answer is $1,700.", "1700"),
])
def test_answers_in_what_real_models_write(reply, expected):
    assert extract_answer(reply) == expected


def test_recorded_qwen_replies_are_scored_as_the_model_meant():
    """Replies Qwen2.5-Coder 1.5B and 0.5B wrote in bench/real_llm.py --quick (prose, LaTeX,
    \\boxed{}, a literal "The answer is N."): the extraction reads the number the reply ends on,
    so a reply is scored right exactly when its final number is the gold answer."""
    import json
    from pathlib import Path

    from sleeptime.prompts import score

    replies = json.loads((Path(__file__).parent / "fixtures" / "qwen_replies.json").read_text())
    assert len(replies) >= 15 and any(r["correct"] for r in replies) and not all(r["correct"] for r in replies)
    for r in replies:
        assert score(extract_answer(r["reply"]), r["gold"]) == r["correct"], r["reply"][-120:]
    literal = [r for r in replies if r["reply"].strip() == "The answer is N."]
    assert literal and all(extract_answer(r["reply"]) is None for r in literal)  # no number: no answer


def test_the_prompt_version_follows_the_prompt_texts(monkeypatch):
    from sleeptime import prompts

    before = prompts._prompt_version()
    assert prompts.PROMPT_VERSION == before and before.startswith("p-")
    monkeypatch.setattr(prompts, "NOTES_HEADER", prompts.NOTES_HEADER + " ")
    assert prompts._prompt_version() != before  # a one-character edit is a new version


def test_test_time_prompts_on_one_context_share_their_prefix_up_to_the_question():
    from sleeptime.prompts import VERBOSITY_INSTRUCTIONS, answer_messages

    def flat(messages):
        return "".join(m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
                       for m in messages)

    context, notes = "Amy has 3 coins. " * 50, "total = 150"
    for with_notes in (None, notes):
        prompts = [flat(answer_messages(context, q, v, with_notes))
                   for q in ("How many coins?", "What if Amy had 2 more?") for v in range(len(VERBOSITY_INSTRUCTIONS))]
        shared = min(len(os.path.commonprefix([prompts[0], p])) for p in prompts[1:])
        # Everything before the question is shared: the system text, the context and c'.
        assert shared >= prompts[0].index("Question: ")
        assert prompts[0][:prompts[0].index("Question: ")].endswith((context if with_notes is None else notes) + "\n\n")
    marked = answer_messages(context, "How many coins?", 2, notes, cache_breakpoint=True)
    assert flat(marked) == flat(answer_messages(context, "How many coins?", 2, notes))
    parts = marked[1]["content"]
    assert parts[0]["cache_control"] == {"type": "ephemeral"} and "cache_control" not in parts[1]
    assert parts[0]["text"].endswith(notes + "\n\n") and parts[1]["text"].startswith("Question: ")
