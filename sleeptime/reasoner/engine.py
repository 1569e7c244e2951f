"""The reference reasoner: an honest, budget-bounded solver for the controlled fragment.

It reads only the text of the messages it is given. Everything it knows comes from sentences
of the fragment (sleeptime.reasoner.fragment) found in that text; everything it derives it must
write down, one step at a time, and every written token counts against ``max_tokens``. When the
budget runs out before the question is answered, it says the answer is unknown. So:

- more sleep budget writes more derived facts into c' (by construction, not by chance);
- a question whose value c' already states costs one short sentence at test time;
- a counterfactual invalidates the derived facts that depend on the changed quantity, so c'
  helps it less;
- the sample index only changes the order in which independent facts are derived.

docs/reasoner.md documents the grammar and the budget semantics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sleeptime.prompts import SLEEP_TRIGGER, VERBOSITY_INSTRUCTIONS
from sleeptime.reasoner.fragment import (
    Base,
    End,
    Node,
    Question,
    Relation,
    Start,
    Sum,
    Transfer,
    parse_fact,
    parse_question,
    parse_statement,
    render_fact,
    render_statement,
    split_sentences,
)
from sleeptime.tokens import count_tokens

CANNOT_DETERMINE = "I cannot determine the answer from the given text."
NOTHING_TO_DERIVE = "No further quantities can be derived from this context."
UNKNOWN_ANSWER = "The answer is unknown."

TokenCounter = Callable[[str], int]


# --- what the reasoner understood ---------------------------------------------------------------


@dataclass
class World:
    """The entities, definitions, transfers and stated values found in some text."""

    unit: str | None = None
    definitions: dict[str, Base | Relation] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    stated: dict[Node, int] = field(default_factory=dict)
    sentences_read: int = 0
    sentences_understood: int = 0

    @classmethod
    def read(cls, text: str) -> World:
        w = cls()
        for sentence in split_sentences(text):
            w.sentences_read += 1
            parsed = parse_statement(sentence)
            if parsed is not None:
                statement, unit = parsed
                w.unit = w.unit or unit
                w.sentences_understood += 1
                if isinstance(statement, Transfer):
                    w.transfers.append(statement)
                elif isinstance(statement, Relation):
                    # A relation defines the structure even if a value was stated before it.
                    w.definitions[statement.entity] = statement
                else:
                    w.stated[Start(statement.entity)] = statement.value
                    w.definitions.setdefault(statement.entity, statement)
                continue
            fact = parse_fact(sentence)
            if fact is not None:
                node, value, unit = fact
                w.unit = w.unit or unit
                w.sentences_understood += 1
                # Canonicalised at use: a transfer read later can change what End(a) means.
                w.stated[node] = value
        return w

    # structure -----------------------------------------------------------------------------

    def has_transfers(self, entity: str) -> bool:
        return any(t.giver == entity or t.receiver == entity for t in self.transfers)

    def canonical(self, node: Node) -> Node:
        return self_canonical(self, node)

    def deps(self, node: Node) -> tuple[Node, ...] | None:
        """What ``node`` is computed from; None when the text does not define it."""
        node = self.canonical(node)
        if isinstance(node, Start):
            d = self.definitions.get(node.entity)
            if d is None:
                return None
            if isinstance(d, Base):
                return ()
            return tuple(Start(a) for a in d.args)
        if isinstance(node, End):
            return (Start(node.entity),)
        when_node = End if node.when == "end" else Start
        return (self.canonical(when_node(node.a)), self.canonical(when_node(node.b)))

    def compute(self, node: Node, values: dict[Node, int]) -> tuple[int, str] | None:
        """(value, written expression) of ``node`` from the values of its deps."""
        node = self.canonical(node)
        deps = self.deps(node)
        if deps is None or any(d not in values for d in deps):
            return None
        v = [values[d] for d in deps]
        if isinstance(node, Start):
            d = self.definitions[node.entity]
            if isinstance(d, Base):
                return d.value, ""
            if d.kind == "more":
                return v[0] + d.amount, f"{v[0]} + {d.amount}"
            if d.kind == "fewer":
                return v[0] - d.amount, f"{v[0]} - {d.amount}"
            if d.kind == "times":
                return d.amount * v[0], f"{d.amount} * {v[0]}"
            if d.kind == "half":
                if v[0] % 2:
                    return None  # not a whole number: outside the fragment
                return v[0] // 2, f"{v[0]} / 2"
            if d.kind == "sum":
                return v[0] + v[1], f"{v[0]} + {v[1]}"
            return v[0] - v[1], f"{v[0]} - {v[1]}"
        if isinstance(node, End):
            total, expr = v[0], str(v[0])
            for t in self.transfers:
                if t.giver == node.entity:
                    total, expr = total - t.amount, f"{expr} - {t.amount}"
                if t.receiver == node.entity:
                    total, expr = total + t.amount, f"{expr} + {t.amount}"
            return total, expr
        return v[0] + v[1], f"{v[0]} + {v[1]}"

    def depends_on(self, node: Node, root: Node, _seen: frozenset[Node] = frozenset()) -> bool:
        node = self.canonical(node)
        if node == root:
            return True
        if node in _seen:
            return False
        deps = self.deps(node) or ()
        return any(self.depends_on(d, root, _seen | {node}) for d in deps)

    def entities(self) -> list[str]:
        names = set(self.definitions)
        for t in self.transfers:
            names |= {t.giver, t.receiver}
        return sorted(names)

    def reason(self, node: Node) -> str:
        """The fact of the context a step relies on, for the verbose test-time styles."""
        node = self.canonical(node)
        if isinstance(node, Start):
            d = self.definitions.get(node.entity)
            return render_statement(d, self.unit or "").rstrip(".") if d else node.entity
        if isinstance(node, End):
            return f"Counting every transfer of {node.entity}"
        return f"Adding {node.a} and {node.b}"


def self_canonical(w: World, node: Node) -> Node:
    # Without transfers, the end value of an entity is its start value: no step is needed.
    if isinstance(node, End) and not w.has_transfers(node.entity):
        return Start(node.entity)
    if isinstance(node, Sum) and node.when == "end" and not (w.has_transfers(node.a) or w.has_transfers(node.b)):
        return Sum.of("start", node.a, node.b)
    return node


# --- writing under a token budget --------------------------------------------------------------


@dataclass
class Writer:
    """Accumulates lines while the whole text, plus a reserved tail, stays within the budget."""

    max_tokens: int
    count: TokenCounter
    lines: list[str] = field(default_factory=list)

    def fits(self, line: str, reserve: str = "") -> bool:
        candidate = "\n".join([*self.lines, line, *([reserve] if reserve else [])])
        return self.count(candidate) <= self.max_tokens

    def write(self, line: str, reserve: str = "") -> bool:
        if not self.fits(line, reserve):
            return False
        self.lines.append(line)
        return True

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _tie_break(sample_index: int, node: Node) -> str:
    return hashlib.sha256(f"{sample_index}|{node!r}".encode()).hexdigest()


# --- sleep time ---------------------------------------------------------------------------------


def think(text: str, max_tokens: int, sample_index: int = 0, count: TokenCounter = count_tokens) -> str:
    """S(c) -> c': derive facts in dependency order until the budget is spent."""
    world = World.read(text)
    if not world.definitions:
        return CANNOT_DETERMINE
    values: dict[Node, int] = {world.canonical(n): v for n, v in world.stated.items()}
    targets = _sleep_targets(world)
    writer = Writer(max_tokens, count)
    pending = [t for t in targets if t not in values]
    while pending:
        ready = [n for n in pending if world.compute(n, values) is not None]
        if not ready:
            break
        # Single quantities before totals; within a phase the sample index picks the order.
        node = min(ready, key=lambda n: (isinstance(n, Sum), _tie_break(sample_index, n)))
        value, expr = world.compute(node, values)  # type: ignore[misc]
        if not writer.write(render_fact(node, value, world.unit or "", expr)):
            break
        values[node] = value
        pending.remove(node)
    if not writer.lines:
        return NOTHING_TO_DERIVE if writer.fits(NOTHING_TO_DERIVE) else ""
    return writer.text


def _sleep_targets(world: World) -> list[Node]:
    names = world.entities()
    singles: list[Node] = []
    for name in names:
        singles.append(Start(name))
        if world.has_transfers(name):
            singles.append(End(name))
    when = "end" if world.transfers else "start"
    sums: list[Node] = [
        world.canonical(Sum.of(when, a, b)) for i, a in enumerate(names) for b in names[i + 1 :]
    ]
    return [n for n in dict.fromkeys([*singles, *sums]) if world.deps(n) is not None]


# --- test time ----------------------------------------------------------------------------------


def verbosity_of(text: str) -> int:
    """Which published verbosity instruction the prompt carries (2 when none is found)."""
    for level in range(len(VERBOSITY_INSTRUCTIONS) - 1, -1, -1):
        if VERBOSITY_INSTRUCTIONS[level] in text:
            return level
    return 2


def _label(node: Node) -> str:
    if isinstance(node, Start):
        return node.entity
    if isinstance(node, End):
        return f"{node.entity} in the end"
    return f"{node.a} and {node.b}" + (" in the end" if node.when == "end" else "")


def _step_line(world: World, node: Node, value: int, expr: str, verbosity: int, index: int, hypothetical: bool) -> str:
    fact = render_fact(node, value, world.unit or "", expr)
    if hypothetical:
        verb = " have " if isinstance(node, Sum) else " has "
        fact = fact.replace(verb, " would have ", 1)
    if verbosity <= 1:
        return f"{_label(node)}: {expr} = {value}."
    if verbosity == 2:
        return fact
    line = f"Step {index}: {world.reason(node)}; so {fact}"
    if verbosity >= 4:
        line += f" Check: recomputing {expr} gives {value} again."
    return line


def _plan(world: World, target: Node, known: dict[Node, int]) -> list[Node] | None:
    """The nodes to derive, dependencies first, to reach ``target`` from ``known``."""
    order: list[Node] = []
    seen: set[Node] = set()

    def visit(node: Node, stack: frozenset[Node]) -> bool:
        node = world.canonical(node)
        if node in known or node in seen:
            return True
        if node in stack:
            return False  # circular definitions cannot be resolved
        deps = world.deps(node)
        if deps is None or not all(visit(d, stack | {node}) for d in deps):
            return False
        seen.add(node)
        order.append(node)
        return True

    return order if visit(target, frozenset()) else None


@dataclass
class _Derivation:
    writer: Writer
    world: World
    verbosity: int
    steps: int = 0

    def run(self, plan: Iterable[Node], values: dict[Node, int], hypothetical: bool = False) -> bool:
        for node in plan:
            result = self.world.compute(node, values)
            if result is None:
                return False
            value, expr = result
            line = _step_line(self.world, node, value, expr, self.verbosity, self.steps + 1, hypothetical)
            # Always keep room for the final sentence.
            if self.verbosity == 0 or not self.writer.write(line, reserve=UNKNOWN_ANSWER):
                return False
            self.steps += 1
            values[node] = value
        return True


def answer(text: str, max_tokens: int, count: TokenCounter = count_tokens) -> str:
    """T(q, c) or T(q, c'): answer the last question in ``text`` within ``max_tokens``."""
    question = parse_question(text)
    if question is None:
        return CANNOT_DETERMINE
    world = World.read(text)
    verbosity = verbosity_of(text)
    writer = Writer(max_tokens, count)
    target = world.canonical(question.target)
    if verbosity >= 3:
        writer.write(f"I need {_label(target)}.", reserve=UNKNOWN_ANSWER)

    values: dict[Node, int] = {world.canonical(n): v for n, v in world.stated.items()}
    derivation = _Derivation(writer, world, verbosity)
    result = _answer_counterfactual(world, question, values, derivation) if question.is_counterfactual else None
    if not question.is_counterfactual:
        if target in values and verbosity >= 3:
            writer.write(f"Stated: {render_fact(target, values[target], world.unit or '')}", reserve=UNKNOWN_ANSWER)
        plan = _plan(world, target, values)
        if plan is not None and derivation.run(plan, values):
            result = values.get(target)

    final = f"The answer is {result}." if result is not None else UNKNOWN_ANSWER
    if not writer.fits(final):
        final = UNKNOWN_ANSWER
    writer.lines.append(final)
    return writer.text


def _answer_counterfactual(world: World, q: Question, values: dict[Node, int], derivation: _Derivation) -> int | None:
    changed = Start(q.change_entity or "")
    if world.deps(changed) is None:
        return None
    if q.change_value is None:
        # "n more than it had" needs the original value first.
        plan = _plan(world, changed, values)
        if plan is None or not derivation.run(plan, values):
            return None
        original = values[changed]
        new_value = original + (q.change_delta or 0)
        expr = f"{original} {'+' if (q.change_delta or 0) >= 0 else '-'} {abs(q.change_delta or 0)}"
    else:
        new_value, expr = q.change_value, ""

    # The hypothetical world: the changed entity becomes a given, and every value that depends
    # on it (stated in c' or derived above) is no longer true there.
    hypo = World(
        unit=world.unit,
        definitions={**world.definitions, changed.entity: Base(changed.entity, new_value)},
        transfers=world.transfers,
    )
    hypo_values = {n: v for n, v in values.items() if not world.depends_on(n, changed)}
    line = _step_line(world, changed, new_value, expr or str(new_value), derivation.verbosity, derivation.steps + 1, True)
    if derivation.verbosity == 0 or not derivation.writer.write(line, reserve=UNKNOWN_ANSWER):
        return None
    derivation.steps += 1
    hypo_values[changed] = new_value
    derivation.world = hypo
    target = hypo.canonical(q.target)
    plan = _plan(hypo, target, hypo_values)
    if plan is None or not derivation.run(plan, hypo_values, hypothetical=True):
        return None
    return hypo_values.get(target)


# --- entry point used by the litellm provider ---------------------------------------------------


def respond(messages_text: str, max_tokens: int, sample_index: int = 0, count: TokenCounter = count_tokens) -> str:
    """Sleep time when the prompt carries the rethink-memory trigger, test time otherwise."""
    if SLEEP_TRIGGER in messages_text:
        return think(messages_text, max_tokens, sample_index, count)
    return answer(messages_text, max_tokens, count)
