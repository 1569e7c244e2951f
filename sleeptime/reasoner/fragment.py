"""The controlled-English fragment the reference reasoner reads and writes.

One module owns both directions (render and parse) so the corpus generator, the reasoner and
its notes can never drift apart. docs/reasoner.md documents the grammar for people.

Quantities are named by nodes:
- ``Start(a)``: what ``a`` holds at the start of the story (set-up sentences describe the start);
- ``End(a)``: what ``a`` holds after every transfer, in story order;
- ``Sum(when, a, b)``: ``a`` and ``b`` together, at the start or in the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

When = Literal["start", "end"]

NAME = r"(?P<{g}>[A-Z][a-z]+)"
NUM = r"(?P<{g}>\d+)"
UNIT = r"(?P<unit>[a-z]+)"

MULTIPLIERS = {"twice": 2, "three times": 3, "four times": 4}
MULTIPLIER_WORDS = {v: k for k, v in MULTIPLIERS.items()}


def _n(g: str) -> str:
    return NAME.format(g=g)


def _d(g: str) -> str:
    return NUM.format(g=g)


# --- nodes -----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Start:
    entity: str


@dataclass(frozen=True, order=True)
class End:
    entity: str


@dataclass(frozen=True, order=True)
class Sum:
    when: When
    a: str
    b: str

    @staticmethod
    def of(when: When, a: str, b: str) -> Sum:
        # "Mia and Leo" and "Leo and Mia" are the same quantity.
        x, y = sorted((a, b))
        return Sum(when, x, y)


Node = Union[Start, End, Sum]


# --- set-up sentences (the story) ------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    entity: str
    value: int


@dataclass(frozen=True)
class Relation:
    """``entity`` at the start is defined from other entities at the start."""

    entity: str
    kind: Literal["more", "fewer", "times", "half", "sum", "difference"]
    args: tuple[str, ...]
    amount: int = 0  # n for more/fewer, the multiplier for times


@dataclass(frozen=True)
class Transfer:
    giver: str
    receiver: str
    amount: int


Statement = Union[Base, Relation, Transfer]


def render_statement(s: Statement, unit: str) -> str:
    if isinstance(s, Base):
        return f"{s.entity} has {s.value} {unit}."
    if isinstance(s, Transfer):
        return f"{s.giver} gives {s.amount} {unit} to {s.receiver}."
    a = s.entity
    if s.kind == "more":
        return f"{a} has {s.amount} more {unit} than {s.args[0]}."
    if s.kind == "fewer":
        return f"{a} has {s.amount} fewer {unit} than {s.args[0]}."
    if s.kind == "times":
        return f"{a} has {MULTIPLIER_WORDS[s.amount]} as many {unit} as {s.args[0]}."
    if s.kind == "half":
        return f"{a} has half as many {unit} as {s.args[0]}."
    if s.kind == "sum":
        return f"{a} has as many {unit} as {s.args[0]} and {s.args[1]} together."
    if s.kind == "difference":
        return f"{a} has as many {unit} as the difference between {s.args[0]} and {s.args[1]}."
    raise ValueError(f"unknown relation kind {s.kind!r}")


_MULT = "|".join(sorted(MULTIPLIERS, key=len, reverse=True))

_STATEMENT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^{_n('a')} has {_d('n')} {UNIT}$"), "base"),
    (re.compile(rf"^{_n('a')} has {_d('n')} more {UNIT} than {_n('b')}$"), "more"),
    (re.compile(rf"^{_n('a')} has {_d('n')} fewer {UNIT} than {_n('b')}$"), "fewer"),
    (re.compile(rf"^{_n('a')} has (?P<mult>{_MULT}) as many {UNIT} as {_n('b')}$"), "times"),
    (re.compile(rf"^{_n('a')} has half as many {UNIT} as {_n('b')}$"), "half"),
    (re.compile(rf"^{_n('a')} has as many {UNIT} as {_n('b')} and {_n('c')} together$"), "sum"),
    (
        re.compile(rf"^{_n('a')} has as many {UNIT} as the difference between {_n('b')} and {_n('c')}$"),
        "difference",
    ),
    (re.compile(rf"^{_n('a')} gives {_d('n')} {UNIT} to {_n('b')}$"), "transfer"),
]


def parse_statement(sentence: str) -> tuple[Statement, str] | None:
    """Parse one set-up sentence (without its final period); returns (statement, unit)."""
    for pattern, kind in _STATEMENT_PATTERNS:
        m = pattern.match(sentence)
        if not m:
            continue
        g = m.groupdict()
        unit = g["unit"]
        if kind == "base":
            return Base(g["a"], int(g["n"])), unit
        if kind == "transfer":
            return Transfer(g["a"], g["b"], int(g["n"])), unit
        if kind in ("more", "fewer"):
            return Relation(g["a"], kind, (g["b"],), int(g["n"])), unit
        if kind == "times":
            return Relation(g["a"], "times", (g["b"],), MULTIPLIERS[g["mult"]]), unit
        if kind == "half":
            return Relation(g["a"], "half", (g["b"],)), unit
        return Relation(g["a"], kind, (g["b"], g["c"])), unit  # type: ignore[arg-type]
    return None


# --- derived facts (what the reasoner writes, and reads back from c') -------------------------

_EXPR = r"(?:(?P<expr>[\d +\-*/]+) = )?"
_FACT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^In the end, {_n('a')} and {_n('b')} have {_EXPR}{_d('n')} {UNIT} together$"), "sum_end"),
    (re.compile(rf"^{_n('a')} and {_n('b')} have {_EXPR}{_d('n')} {UNIT} together$"), "sum_start"),
    (re.compile(rf"^In the end, {_n('a')} has {_EXPR}{_d('n')} {UNIT}$"), "end"),
    (re.compile(rf"^{_n('a')} has {_EXPR}{_d('n')} {UNIT}$"), "start"),
]


def render_fact(node: Node, value: int, unit: str, expr: str | None = None) -> str:
    shown = f"{expr} = {value}" if expr else str(value)
    if isinstance(node, Start):
        return f"{node.entity} has {shown} {unit}."
    if isinstance(node, End):
        return f"In the end, {node.entity} has {shown} {unit}."
    prefix = "In the end, " if node.when == "end" else ""
    return f"{prefix}{node.a} and {node.b} have {shown} {unit} together."


def parse_fact(sentence: str) -> tuple[Node, int, str] | None:
    """Parse a stated value ("Leo has 14 + 3 = 17 marbles") into (node, value, unit)."""
    for pattern, kind in _FACT_PATTERNS:
        m = pattern.match(sentence)
        if not m:
            continue
        g = m.groupdict()
        value, unit = int(g["n"]), g["unit"]
        if kind == "start":
            return Start(g["a"]), value, unit
        if kind == "end":
            return End(g["a"]), value, unit
        return Sum.of("end" if kind == "sum_end" else "start", g["a"], g["b"]), value, unit
    return None


# --- questions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    target: Node
    unit: str
    # A counterfactual changes one entity's start value before anything is derived.
    change_entity: str | None = None
    change_delta: int | None = None  # +n / -n
    change_value: int | None = None  # "If Mia had 20 marbles"

    @property
    def is_counterfactual(self) -> bool:
        return self.change_entity is not None


def _when_phrase(when: When, with_transfers: bool) -> str:
    if when == "end":
        return " in the end"
    return " at the start" if with_transfers else ""


def render_question(q: Question, with_transfers: bool = True) -> str:
    t = q.target
    if isinstance(t, Sum):
        when = _when_phrase(t.when, with_transfers)
        ask_cf = f"would {t.a} and {t.b} have together{when}"
        ask = f"do {t.a} and {t.b} have together{when}"
    else:
        when = _when_phrase("end" if isinstance(t, End) else "start", with_transfers)
        ask_cf = f"would {t.entity} have{when}"
        ask = f"does {t.entity} have{when}"
    if not q.is_counterfactual:
        return f"How many {q.unit} {ask}?"
    if q.change_value is not None:
        change = f"{q.change_value} {q.unit}"
    else:
        delta = q.change_delta or 0
        change = f"{abs(delta)} {'more' if delta > 0 else 'fewer'} {q.unit}"
    start = " at the start" if with_transfers else ""
    return f"If {q.change_entity} had {change}{start}, how many {q.unit} {ask_cf}?"


_WHEN = r"(?P<when> in the end| at the start)?"
_SUBJECT = rf"(?:{_n('a')} and {_n('b')}|{_n('x')})"
_ASK = rf"(?:does|do|would) {_SUBJECT} have(?P<together> together)?{_WHEN}"
_QUESTION = re.compile(rf"How many {UNIT} {_ASK}\?$")
_COUNTERFACTUAL = re.compile(
    rf"If {_n('c')} had (?:(?P<delta>\d+) (?P<dir>more|fewer)|(?P<value>\d+)) (?P<cunit>[a-z]+)"
    rf"(?: at the start)?, how many {UNIT} {_ASK}\?$"
)


def parse_question(text: str) -> Question | None:
    """Find the last question of the fragment in ``text``."""
    found: Question | None = None
    for line in re.split(r"(?<=[?.!])\s+|\n", text):
        line = line.strip()
        m = _COUNTERFACTUAL.search(line) or _QUESTION.search(line)
        if not m:
            continue
        g = m.groupdict()
        when: When = "end" if (g.get("when") or "").strip() == "in the end" else "start"
        if g.get("a"):
            target: Node = Sum.of(when, g["a"], g["b"])
        elif when == "end":
            target = End(g["x"])
        else:
            target = Start(g["x"])
        if g.get("c"):
            delta = None
            if g.get("delta"):
                delta = int(g["delta"]) * (1 if g["dir"] == "more" else -1)
            value = int(g["value"]) if g.get("value") else None
            found = Question(target, g["unit"], g["c"], delta, value)
        else:
            found = Question(target, g["unit"])
    return found


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` without their final period; questions are dropped."""
    out = []
    for raw in re.split(r"(?<=[.!?])\s+|\n+", text):
        s = raw.strip()
        if not s or s.endswith("?"):
            continue
        # A leading list marker or "Step 3:" label does not change what a sentence states.
        s = re.sub(r"^(?:[-*]\s+|\d+[.)]\s+|Step \d+:\s+)", "", s)
        out.append(s.rstrip(".!").strip())
    return out
