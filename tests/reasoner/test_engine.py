from sleeptime.prompts import sleep_messages, answer_messages
from sleeptime.reasoner.engine import CANNOT_DETERMINE, UNKNOWN_ANSWER, answer, think, verbosity_of
from sleeptime.reasoner.fragment import parse_fact, split_sentences
from sleeptime.tokens import count_tokens

STORY = (
    "Mia has 14 marbles. Leo has 3 more marbles than Mia. Ava has twice as many marbles as Leo. "
    "Ben has as many marbles as Ava and Mia together. Zoe has half as many marbles as Ben. "
    "Kai has 6 fewer marbles than Zoe. Eva has as many marbles as the difference between Ava and Leo. "
    "Mia gives 4 marbles to Leo."
)


def _sleep(budget: int, k: int = 0) -> str:
    return think("\n".join(m["content"] for m in sleep_messages(STORY)), budget, k)


def _ask(question: str, verbosity: int, max_tokens: int, notes: str | None = None) -> str:
    return answer("\n".join(m["content"] for m in answer_messages(STORY, question, verbosity, notes)), max_tokens)


def test_sleep_output_stays_within_budget_and_grows_with_it():
    previous: set[str] = set()
    for budget in (20, 60, 150, 400, 2000):
        text = _sleep(budget)
        assert count_tokens(text) <= budget
        facts = set(text.splitlines())
        assert previous <= facts  # more budget derives more, never something else
        assert all(parse_fact(s) for s in split_sentences(text))  # c' is written in the fragment
        previous = facts
    assert len(previous) > 10


def test_sample_index_changes_the_order_not_the_facts():
    full = {k: set(_sleep(5000, k).splitlines()) for k in range(4)}
    assert all(f == full[0] for f in full.values())
    small = {_sleep(40, k) for k in range(6)}
    assert len(small) > 1  # with a tight budget, different samples cover different facts


def test_lookup_from_notes_is_cheap_and_deriving_is_not():
    notes = _sleep(5000)
    q = "How many marbles does Kai have at the start?"
    from_notes = _ask(q, 2, 200, notes)
    derived = _ask(q, 2, 200)
    assert from_notes.endswith("The answer is 18.") and derived.endswith("The answer is 18.")
    assert count_tokens(from_notes) * 5 < count_tokens(derived)


def test_budget_too_small_gives_unknown_never_the_answer():
    reply = _ask("How many marbles does Kai have at the start?", 2, 30)
    assert reply.endswith(UNKNOWN_ANSWER)
    assert count_tokens(reply) <= 30
    assert _ask("How many marbles does Kai have at the start?", 0, 500) == UNKNOWN_ANSWER


def test_counterfactual_ignores_notes_that_depend_on_the_change():
    notes = _sleep(5000)
    q = "If Mia had 2 more marbles at the start, how many marbles would Ben have at the start?"
    # Mia 16 -> Leo 19 -> Ava 38 -> Ben 38 + 16 = 54; the notes' Ben (48) must not be reused.
    assert _ask(q, 2, 400, notes).endswith("The answer is 54.")
    assert _ask(q, 2, 400).endswith("The answer is 54.")


def test_end_values_and_sums():
    assert _ask("How many marbles does Leo have in the end?", 2, 200).endswith("The answer is 21.")
    assert _ask("How many marbles do Mia and Leo have together in the end?", 2, 200).endswith("The answer is 31.")
    assert _ask("How many marbles does Eva have at the start?", 2, 200).endswith("The answer is 17.")


def test_verbosity_costs_what_it_says():
    q = "How many marbles does Ben have at the start?"
    lengths = [count_tokens(_ask(q, v, 2000)) for v in range(1, 5)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert [verbosity_of("\n".join(m["content"] for m in answer_messages("x", "y", v))) for v in range(5)] == [0, 1, 2, 3, 4]


def test_text_outside_the_fragment_gets_a_short_reply():
    assert think("[trigger_rethink_memory] New situation:\nThe weather was lovely and nobody counted anything.", 500) == CANNOT_DETERMINE
    assert answer("Mia has 3 apples.\nQuestion: What colour is the sky?", 500) == CANNOT_DETERMINE
    # An entity the text never defines cannot be answered.
    assert answer("Mia has 3 apples.\nQuestion: How many apples does Bob have?", 500) == UNKNOWN_ANSWER


def test_reply_depends_only_on_text():
    text = "\n".join(m["content"] for m in answer_messages(STORY, "How many marbles does Ava have at the start?", 3))
    assert answer(text, 300) == answer(str(text), 300)
    renamed = text.replace("Ava", "Ivy")
    assert answer(renamed, 300).replace("Ivy", "Ava") == answer(text, 300)
