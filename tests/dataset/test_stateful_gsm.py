"""bench/stateful_gsm.py: GSM-Symbolic rows become Stateful GSM-Symbolic rows the loader reads."""

import json

from bench.stateful_gsm import convert, split_question
from sleeptime.dataset import load_corpus


def test_the_last_sentence_is_the_question_and_the_rest_the_context():
    problem = ("Yara saw a 32-foot whale with 16 remoras. Then, 1/2 of them swam away. If 3.5 more came, "
               "how many remoras are there?")
    assert split_question(problem) == ("Yara saw a 32-foot whale with 16 remoras. Then, 1/2 of them swam away.",
                                       "If 3.5 more came, how many remoras are there?")
    assert split_question("How many apples are there?") is None  # nothing left for the context
    assert split_question("Ava has 3 apples. Ben has 2.") is None  # asks nothing


def test_converted_rows_load_as_stateful_gsm_symbolic(tmp_path):
    rows = [{"id": 7, "instance": i, "question": f"Ava has {i + 2} apples. Ben gives her 3. How many does Ava have?",
             "answer": f"{i + 2} + 3 = {i + 5}\n#### {i + 5}"} for i in range(3)]
    out, skipped = convert(rows, instances=2)
    assert skipped == 0 and [r["instance"] for r in out] == [0, 1]
    path = tmp_path / "stateful.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    loaded = load_corpus(path)
    assert not loaded.quarantined
    assert [(r.context.id, r.context.text, r.queries[0].text, r.queries[0].gold_answer) for r in loaded.rows] == [
        ("7-0", "Ava has 2 apples. Ben gives her 3.", "How many does Ava have?", "5"),
        ("7-1", "Ava has 3 apples. Ben gives her 3.", "How many does Ava have?", "6"),
    ]
