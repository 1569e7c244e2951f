"""The arithmetic-worlds generator: determinism, the fragment, and agreement with the reasoner."""

from __future__ import annotations

import random
from collections import Counter
from functools import lru_cache

import pytest

from sleeptime.dataset.worlds import (
    NAMES,
    QUERY_KINDS,
    RELATION_KINDS,
    World,
    WorldSpec,
    build_world,
    generate_corpus,
    generate_world,
    node_value,
)
from sleeptime.domain import ContextWithQueries, Query
from sleeptime.prompts import extract_answer, answer_messages
from sleeptime.reasoner import engine
from sleeptime.reasoner.fragment import (
    Base,
    Question,
    Relation,
    Start,
    Transfer,
    parse_question,
    parse_statement,
    render_question,
    render_statement,
    split_sentences,
)


@lru_cache(maxsize=None)
def corpus(n: int, seed: int = 0) -> tuple[ContextWithQueries, ...]:
    return tuple(generate_corpus(n, seed=seed))


def statements(row: ContextWithQueries) -> list[Base | Relation | Transfer]:
    out = []
    for sentence in split_sentences(row.context.text):
        parsed = parse_statement(sentence)
        assert parsed is not None, f"{row.context.id}: cannot parse {sentence!r}"
        statement, unit = parsed
        assert unit == row.context.metadata["unit"]
        out.append(statement)
    return out


def rebuild(row: ContextWithQueries) -> World:
    """The world as read back from the text alone."""
    stmts = statements(row)
    defs = [s for s in stmts if not isinstance(s, Transfer)]
    transfers = [s for s in stmts if isinstance(s, Transfer)]
    return World(row.context.metadata["unit"], defs, transfers)  # type: ignore[arg-type]


def engine_answer(row: ContextWithQueries, question_text: str) -> str | None:
    messages = answer_messages(row.context.text, question_text, verbosity=2)
    text = "\n".join(m["content"] for m in messages)
    return extract_answer(engine.answer(text, max_tokens=100000))


def test_same_seed_same_corpus_and_different_seed_differs() -> None:
    a = generate_corpus(15, seed=7)
    assert a == generate_corpus(15, seed=7)
    b = generate_corpus(15, seed=8)
    assert [r.context.text for r in a] != [r.context.text for r in b]
    # Context i does not depend on how many contexts are generated.
    assert generate_corpus(5, seed=7) == a[:5]
    # generate_world is a pure function of its generator.
    assert generate_world(random.Random(3), WorldSpec(), 0) == generate_world(random.Random(3), WorldSpec(), 0)


def test_contexts_are_well_formed_fragment_stories() -> None:
    spec = WorldSpec()
    for i, row in enumerate(corpus(200)):
        ctx = row.context
        assert ctx.id == f"world-{i:05d}"
        assert ctx.source == "arithmetic-worlds"
        meta = ctx.metadata
        assert meta["seed"] == 0 and meta["index"] == i and meta["unit"] in spec.units
        stmts = statements(row)
        # The text is exactly the rendered sentences joined by single spaces.
        assert ctx.text == " ".join(render_statement(s, meta["unit"]) for s in stmts)
        defs = [s for s in stmts if not isinstance(s, Transfer)]
        transfers = [s for s in stmts if isinstance(s, Transfer)]
        names = [d.entity for d in defs]
        assert len(set(names)) == len(names) == meta["n_entities"]
        assert all(n in NAMES and n.isalpha() and n[0].isupper() and n[1:].islower() for n in names)
        assert 1 <= sum(isinstance(d, Base) for d in defs) <= 3
        assert all(5 <= d.value <= 60 for d in defs if isinstance(d, Base))
        # Set-up first, then transfers; every argument introduced before it is used.
        assert stmts == [*defs, *transfers]
        seen: set[str] = set()
        for d in defs:
            if isinstance(d, Relation):
                assert set(d.args) <= seen, (ctx.id, d)
                if d.kind in ("more", "fewer"):
                    assert 1 <= d.amount <= 20
                if d.kind == "times":
                    assert d.amount in (2, 3)
            seen.add(d.entity)
        assert len(transfers) == meta["n_transfers"] <= 2
        assert all(t.giver != t.receiver and {t.giver, t.receiver} <= seen for t in transfers)
        world = rebuild(row)
        assert max(world.depths().values()) == meta["depth"]
        evaluated = world.evaluate()
        assert evaluated is not None, ctx.id
        start, _ = evaluated
        assert all(1 <= v <= 1000 for v in start.values())
        holding = dict(start)
        for t in transfers:
            holding[t.giver] -= t.amount
            holding[t.receiver] += t.amount
            assert holding[t.giver] >= 0


def test_queries_are_well_formed() -> None:
    for row in corpus(200):
        qs = row.queries
        assert len(qs) >= 6
        assert len({q.text for q in qs}) == len(qs)
        world = rebuild(row)
        with_transfers = bool(world.transfers)
        start, end = world.evaluate()  # type: ignore[misc]
        for q in qs:
            assert q.id == Query.make_id(row.context.id, q.text)
            assert q.kind in QUERY_KINDS
            assert q.gold_answer is not None and q.gold_answer.isdigit()
            question = parse_question(q.text)
            assert question is not None, q.text
            assert render_question(question, with_transfers=with_transfers) == q.text
            if with_transfers and "at the start" not in q.text:
                assert "in the end" in q.text
            if q.kind == "lookup":
                assert isinstance(question.target, Start)
                assert isinstance(world.definition(question.target.entity), Base)
                assert q.gold_answer == str(start[question.target.entity])
            elif q.kind == "counterfactual":
                assert question.is_counterfactual and question.change_delta and 1 <= abs(question.change_delta) <= 10
            else:
                assert not question.is_counterfactual
                assert q.gold_answer == str(node_value(question.target, start, end))


def test_gold_answers_match_the_reference_reasoner() -> None:
    mismatches = []
    for row in corpus(40):
        for q in row.queries:
            got = engine_answer(row, q.text)
            if got != q.gold_answer:
                mismatches.append((row.context.id, row.context.text, q.text, q.gold_answer, got))
    assert not mismatches, mismatches[:5]


def test_coverage_of_depths_kinds_and_relations() -> None:
    rows = corpus(200)
    depths = Counter(r.context.metadata["depth"] for r in rows)
    assert set(depths) == {1, 2, 3, 4, 5, 6}
    assert min(depths.values()) >= 15, depths  # fairly even: 200 / 6 is about 33
    kinds = Counter(q.kind for r in rows for q in r.queries)
    assert set(kinds) == set(QUERY_KINDS)
    assert kinds["counterfactual"] >= 300 and kinds["sum"] >= 300 and kinds["derived"] >= 700
    relations = Counter(s.kind for r in rows for s in statements(r) if isinstance(s, Relation))
    assert set(relations) == set(RELATION_KINDS)
    assert any(r.context.metadata["n_transfers"] == 0 for r in rows)
    assert any(r.context.metadata["n_transfers"] == 2 for r in rows)
    assert any("in the end" in q.text for r in rows for q in r.queries if q.kind == "derived")
    assert any("in the end" in q.text for r in rows for q in r.queries if q.kind == "sum")


def test_counterfactual_targets_depend_on_the_changed_entity() -> None:
    checked = 0
    for row in corpus(200):
        world = rebuild(row)
        with_transfers = bool(world.transfers)
        for q in row.queries:
            if q.kind != "counterfactual":
                continue
            question = parse_question(q.text)
            assert question is not None and question.change_entity and question.change_delta
            x = question.change_entity
            target = question.target
            entity = getattr(target, "entity", None)
            assert entity is not None and entity != x
            assert entity in world.descendants(x), (row.context.id, q.text)
            start, end = world.evaluate()  # type: ignore[misc]
            factual = node_value(target, start, end)
            hypothetical = world.evaluate({x: start[x] + question.change_delta})
            assert hypothetical is not None, (row.context.id, q.text)  # stays valid
            assert q.gold_answer == str(node_value(target, *hypothetical))
            assert q.gold_answer != str(factual)
            # The reasoner agrees on the factual value, so the change really changes the answer.
            factual_text = render_question(Question(target, question.unit), with_transfers=with_transfers)
            assert engine_answer(row, factual_text) == str(factual)
            checked += 1
    assert checked >= 300


def test_spec_is_respected() -> None:
    spec = WorldSpec(n_entities=(4, 4), max_depth=2, n_transfers=(1, 1), queries_per_context=6, units=("pebbles",))
    rows = generate_corpus(30, seed=1, spec=spec)
    for row in rows:
        meta = row.context.metadata
        assert meta["unit"] == "pebbles" and meta["n_transfers"] == 1 and meta["n_entities"] == 4
        assert 1 <= meta["depth"] <= 2
        assert len(row.queries) == 6
    assert {r.context.metadata["depth"] for r in rows} == {1, 2}
    # Deep chains get the entities they need even when the range is small.
    for i in range(20):
        world = build_world(random.Random(i), WorldSpec(n_entities=(3, 3), max_depth=6))
        assert len(world.entities) >= max(world.depths().values()) + 1
    with pytest.raises(ValueError):
        WorldSpec(max_depth=7)
