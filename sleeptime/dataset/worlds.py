"""Seeded "arithmetic worlds": short stories in the controlled fragment, with gold answers.

Each context is a small story written with the sentences of :mod:`sleeptime.reasoner.fragment`:
one to three base quantities ("Mia has 12 marbles."), the other entities defined from earlier
ones by relations ("Leo has 3 more marbles than Mia."), then zero to two transfers ("Mia gives 4
marbles to Leo."). The definitions form a DAG whose longest chain has a depth drawn evenly from
1..``max_depth`` (a base has depth 0; a relation entity has depth 1 + the deepest of its args).

Gold answers come from the generator's own evaluator over its own structure, never from the
reference reasoner, so the two cross-check each other in the tests. Query kinds:

- ``lookup``: the start value of a base entity (stated in the text);
- ``derived``: the start value of a relation entity, or the end value of an entity with transfers;
- ``sum``: two entities together, at the start or in the end;
- ``counterfactual``: "If X had n more/fewer ... at the start, how many would Y have ...?", where
  Y depends on X and the change really changes the answer.

Every value, factual or hypothetical, is a non-negative integer (start values are at least 1),
halves are only taken of even numbers, and no holding goes below 0 during the transfers.

:func:`generate_mixed_corpus` mixes shallow, lookup-heavy stories (``EASY_SPEC``) with deep,
counterfactual-heavy ones (``HARD_SPEC``), so that no single (variant, test budget) is the best
choice for every context.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sleeptime.domain import Context, ContextWithQueries, Query
from sleeptime.reasoner.fragment import (
    Base,
    End,
    Node,
    Question,
    Relation,
    Start,
    Sum,
    Transfer,
    render_question,
    render_statement,
)

SOURCE = "arithmetic-worlds"

NAMES: tuple[str, ...] = (
    "Mia", "Leo", "Ava", "Ben", "Zoe", "Sam", "Kai", "Eva", "Tom", "Ivy",
    "Max", "Lily", "Noah", "Emma", "Liam", "Ella", "Owen", "Ruby", "Jack", "Nora",
    "Finn", "Rosa", "Omar", "Lena", "Hugo", "Iris", "Theo", "Maya", "Luca", "Anna",
    "Ravi", "Nina", "Adam", "Sara", "Eli", "Jade", "Dan", "Amy", "Paul", "Cleo",
)  # fmt: skip

RELATION_KINDS: tuple[str, ...] = ("more", "fewer", "times", "half", "sum", "difference")
QUERY_KINDS: tuple[str, ...] = ("lookup", "derived", "sum", "counterfactual")

MAX_VALUE = 1000
BASE_RANGE = (5, 60)
MORE_FEWER_RANGE = (1, 20)
MULTIPLIER_CHOICES = (2, 3)
TRANSFER_MAX = 20
CHANGE_RANGE = (1, 10)


@dataclass(frozen=True)
class WorldSpec:
    n_entities: tuple[int, int] = (5, 8)  # inclusive range of entities per story
    max_depth: int = 6  # longest relation chain depth (1..6)
    n_transfers: tuple[int, int] = (0, 2)
    queries_per_context: int = 10
    units: tuple[str, ...] = ("marbles", "apples", "stickers", "coins", "books", "shells", "cards")
    # Weights of QUERY_KINDS (lookup, derived, sum, counterfactual) drawn per query; None keeps
    # the fixed 20/40/20/20 quota, so corpora generated before this field existed do not change.
    query_mix: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.n_entities
        if not 2 <= lo <= hi:
            raise ValueError(f"n_entities must satisfy 2 <= lo <= hi, got {self.n_entities}")
        if not 1 <= self.max_depth <= 6:
            raise ValueError(f"max_depth must be 1..6, got {self.max_depth}")
        if hi > len(NAMES) or self.max_depth + 1 > len(NAMES):
            raise ValueError(f"at most {len(NAMES)} entities per story")
        tlo, thi = self.n_transfers
        if not 0 <= tlo <= thi:
            raise ValueError(f"n_transfers must satisfy 0 <= lo <= hi, got {self.n_transfers}")
        if self.queries_per_context < 1:
            raise ValueError("queries_per_context must be at least 1")
        if not self.units or not all(u.isalpha() and u.islower() for u in self.units):
            raise ValueError("units must be non-empty lowercase words")
        if self.query_mix is not None:
            mix = self.query_mix
            if len(mix) != len(QUERY_KINDS) or any(w < 0 for w in mix) or sum(mix) <= 0:
                raise ValueError(f"query_mix must be {len(QUERY_KINDS)} non-negative weights with a positive sum, got {mix}")


# --- the world and its evaluator ----------------------------------------------------------------


@dataclass
class World:
    """One story: definitions in story (topological) order, then transfers."""

    unit: str
    definitions: list[Base | Relation]
    transfers: list[Transfer] = field(default_factory=list)

    @property
    def entities(self) -> list[str]:
        return [d.entity for d in self.definitions]

    def definition(self, entity: str) -> Base | Relation:
        for d in self.definitions:
            if d.entity == entity:
                return d
        raise KeyError(entity)

    @property
    def statements(self) -> list[Base | Relation | Transfer]:
        return [*self.definitions, *self.transfers]

    @property
    def sentences(self) -> list[str]:
        return [render_statement(s, self.unit) for s in self.statements]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    def depths(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.definitions:
            out[d.entity] = 0 if isinstance(d, Base) else 1 + max(out[a] for a in d.args)
        return out

    def has_transfers(self, entity: str) -> bool:
        return any(t.giver == entity or t.receiver == entity for t in self.transfers)

    def descendants(self, entity: str) -> set[str]:
        """Entities whose start value depends (through relations) on ``entity``'s."""
        out: set[str] = set()
        for d in self.definitions:  # topological order: args come first
            if isinstance(d, Relation) and any(a == entity or a in out for a in d.args):
                out.add(d.entity)
        return out

    # evaluation --------------------------------------------------------------------------------

    def start_values(self, override: dict[str, int] | None = None) -> dict[str, int] | None:
        """Start values by the definitions; ``override`` makes entities givens (counterfactuals).

        None when some value would leave the story's valid range (a start value below 1 or above
        MAX_VALUE, or half of an odd number).
        """
        override = override or {}
        values: dict[str, int] = {}
        for d in self.definitions:
            if d.entity in override:
                v = override[d.entity]
            elif isinstance(d, Base):
                v = d.value
            else:
                v_ = _apply(d, [values[a] for a in d.args])
                if v_ is None:
                    return None
                v = v_
            if not 1 <= v <= MAX_VALUE:
                return None
            values[d.entity] = v
        return values

    def end_values(self, start: dict[str, int]) -> dict[str, int] | None:
        """Start values plus the transfers in story order; None if a holding goes below 0."""
        holding = dict(start)
        for t in self.transfers:
            holding[t.giver] -= t.amount
            holding[t.receiver] += t.amount
            if holding[t.giver] < 0:
                return None
        return holding

    def evaluate(self, override: dict[str, int] | None = None) -> tuple[dict[str, int], dict[str, int]] | None:
        start = self.start_values(override)
        if start is None:
            return None
        end = self.end_values(start)
        if end is None:
            return None
        return start, end

    def value(self, node: Node, override: dict[str, int] | None = None) -> int | None:
        evaluated = self.evaluate(override)
        if evaluated is None:
            return None
        return node_value(node, *evaluated)


def node_value(node: Node, start: dict[str, int], end: dict[str, int]) -> int:
    if isinstance(node, Start):
        return start[node.entity]
    if isinstance(node, End):
        return end[node.entity]
    values = end if node.when == "end" else start
    return values[node.a] + values[node.b]


def _apply(r: Relation, v: list[int]) -> int | None:
    if r.kind == "more":
        return v[0] + r.amount
    if r.kind == "fewer":
        return v[0] - r.amount
    if r.kind == "times":
        return v[0] * r.amount
    if r.kind == "half":
        return v[0] // 2 if v[0] % 2 == 0 else None
    if r.kind == "sum":
        return v[0] + v[1]
    if r.kind == "difference":
        return v[0] - v[1]
    raise ValueError(f"unknown relation kind {r.kind!r}")


# --- building a story ---------------------------------------------------------------------------


def _make_relation(
    rng: random.Random, entity: str, first: str, candidates: list[str], values: dict[str, int]
) -> Relation | None:
    """A valid relation for ``entity`` with ``first`` as an argument (second from candidates)."""
    kinds = list(RELATION_KINDS)
    rng.shuffle(kinds)
    v = values[first]
    others = [c for c in candidates if c != first]
    for kind in kinds:
        if kind == "more":
            n = rng.randint(*MORE_FEWER_RANGE)
            if v + n <= MAX_VALUE:
                return Relation(entity, "more", (first,), n)
        elif kind == "fewer":
            if v >= 2:
                n = rng.randint(MORE_FEWER_RANGE[0], min(MORE_FEWER_RANGE[1], v - 1))
                return Relation(entity, "fewer", (first,), n)
        elif kind == "times":
            m = rng.choice(MULTIPLIER_CHOICES)
            if v * m <= MAX_VALUE:
                return Relation(entity, "times", (first,), m)
        elif kind == "half":
            if v % 2 == 0 and v >= 2:
                return Relation(entity, "half", (first,))
        elif kind == "sum":
            if others:
                other = rng.choice(others)
                if v + values[other] <= MAX_VALUE:
                    args = (first, other) if rng.random() < 0.5 else (other, first)
                    return Relation(entity, "sum", args)
        elif kind == "difference":
            fits = [o for o in others if values[o] != v]
            if fits:
                other = rng.choice(fits)
                big, small = (first, other) if v > values[other] else (other, first)
                return Relation(entity, "difference", (big, small))
    return None


def _topological_shuffle(rng: random.Random, defs: list[Base | Relation]) -> list[Base | Relation]:
    """A random order of ``defs`` in which every argument is introduced before its use."""
    remaining = list(defs)
    placed: set[str] = set()
    out: list[Base | Relation] = []
    while remaining:
        ready = [d for d in remaining if isinstance(d, Base) or all(a in placed for a in d.args)]
        pick = rng.choice(ready)
        remaining.remove(pick)
        placed.add(pick.entity)
        out.append(pick)
    return out


def build_world(rng: random.Random, spec: WorldSpec) -> World:
    """A random story whose deepest entity has a depth drawn uniformly from 1..max_depth."""
    target_depth = rng.randint(1, spec.max_depth)
    lo, hi = spec.n_entities
    # A chain of depth d needs at least d relation entities above a base.
    n_entities = rng.randint(max(lo, target_depth + 1), max(hi, target_depth + 1))
    n_bases = rng.randint(1, max(1, min(3, n_entities - target_depth)))
    unit = rng.choice(spec.units)

    for _ in range(1000):
        names = rng.sample(NAMES, n_entities)
        defs: list[Base | Relation] = []
        values: dict[str, int] = {}
        depth: dict[str, int] = {}
        for name in names[:n_bases]:
            defs.append(Base(name, rng.randint(*BASE_RANGE)))
            values[name], depth[name] = defs[-1].value, 0  # type: ignore[union-attr]
        ok = True
        rest = names[n_bases:]
        # The spine: one entity at each depth 1..target_depth.
        prev = rng.choice(names[:n_bases])
        for k, name in enumerate(rest[:target_depth], start=1):
            shallower = [e for e in depth if depth[e] <= k - 1]
            r = _make_relation(rng, name, prev, shallower, values)
            if r is None:
                ok = False
                break
            defs.append(r)
            values[name] = _apply(r, [values[a] for a in r.args])  # type: ignore[assignment]
            depth[name] = k
            prev = name
        if not ok:
            continue
        # The others: any depth up to target_depth.
        for name in rest[target_depth:]:
            shallower = [e for e in depth if depth[e] < target_depth]
            r = _make_relation(rng, name, rng.choice(shallower), shallower, values)
            if r is None:
                ok = False
                break
            defs.append(r)
            values[name] = _apply(r, [values[a] for a in r.args])  # type: ignore[assignment]
            depth[name] = 1 + max(depth[a] for a in r.args)
        if not ok or not all(1 <= v <= MAX_VALUE for v in values.values()):
            continue
        world = World(unit, _topological_shuffle(rng, defs))
        _add_transfers(rng, world, rng.randint(*spec.n_transfers))
        assert world.evaluate() is not None
        return world
    raise RuntimeError("could not build a valid world")  # pragma: no cover


def _add_transfers(rng: random.Random, world: World, n: int) -> None:
    start = world.start_values()
    assert start is not None
    holding = dict(start)
    names = world.entities
    for _ in range(n):
        givers = [e for e in names if holding[e] >= 1]
        if not givers or len(names) < 2:
            return
        giver = rng.choice(givers)
        receiver = rng.choice([e for e in names if e != giver])
        amount = rng.randint(1, min(TRANSFER_MAX, holding[giver]))
        world.transfers.append(Transfer(giver, receiver, amount))
        holding[giver] -= amount
        holding[receiver] += amount


# --- questions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    kind: str
    question: Question
    answer: int


def _lookup_candidates(world: World) -> list[_Candidate]:
    start = world.start_values()
    assert start is not None
    return [
        _Candidate("lookup", Question(Start(d.entity), world.unit), start[d.entity])
        for d in world.definitions
        if isinstance(d, Base)
    ]


def _derived_candidates(rng: random.Random, world: World) -> list[_Candidate]:
    """Deepest first (random among equals); one end value up front when there are transfers."""
    start, end = world.evaluate()  # type: ignore[misc]
    depth = world.depths()
    ends: list[tuple[int, float, _Candidate]] = []
    starts: list[tuple[int, float, _Candidate]] = []
    for e in world.entities:
        if isinstance(world.definition(e), Relation):
            starts.append((depth[e], rng.random(), _Candidate("derived", Question(Start(e), world.unit), start[e])))
        if world.has_transfers(e):
            ends.append((depth[e] + 1, rng.random(), _Candidate("derived", Question(End(e), world.unit), end[e])))
    ends.sort(key=lambda t: (-t[0], t[1]))
    rest = sorted([*starts, *ends[1:]], key=lambda t: (-t[0], t[1]))
    return [c for _, _, c in [*ends[:1], *rest]]


def _sum_candidates(rng: random.Random, world: World) -> list[_Candidate]:
    start, end = world.evaluate()  # type: ignore[misc]
    names = world.entities
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rng.shuffle(pairs)
    out = []
    for a, b in pairs:
        when = "end" if world.transfers and rng.random() < 0.5 else "start"
        node = Sum.of(when, a, b)  # type: ignore[arg-type]
        out.append(_Candidate("sum", Question(node, world.unit), node_value(node, start, end)))
    return out


def _counterfactual_candidates(rng: random.Random, world: World, limit: int) -> list[_Candidate]:
    start, end = world.evaluate()  # type: ignore[misc]
    sources = [e for e in world.entities if world.descendants(e)]
    out: list[_Candidate] = []
    for _ in range(40 * max(limit, 1)):
        if len(out) >= limit or not sources:
            break
        x = rng.choice(sources)
        y = rng.choice(sorted(world.descendants(x)))
        delta = rng.randint(*CHANGE_RANGE) * rng.choice((1, -1))
        target: Node = End(y) if world.transfers and rng.random() < 0.5 else Start(y)
        hypothetical = world.value(target, {x: start[x] + delta})
        factual = node_value(target, start, end)
        if hypothetical is None or hypothetical == factual:
            continue  # leaves the valid range, or the change cancels out: not a good question
        out.append(_Candidate("counterfactual", Question(target, world.unit, x, delta), hypothetical))
    return out


def _select_queries(
    rng: random.Random, world: World, n: int, mix: tuple[float, ...] | None = None
) -> list[_Candidate]:
    """Without ``mix``: about 20% lookup, 40% derived, 20% sum, 20% counterfactual, deficits filled
    by others. With ``mix``: each query's kind drawn by those weights among the kinds that still
    have candidates (a story has only one to three bases, so lookups run out first)."""
    if mix is None:
        quota = {"lookup": round(0.2 * n), "sum": round(0.2 * n), "counterfactual": round(0.2 * n)}
        quota["derived"] = max(0, n - sum(quota.values()))
    else:
        quota = dict.fromkeys(QUERY_KINDS, 0)
    with_transfers = bool(world.transfers)
    pools = {
        "lookup": _lookup_candidates(world),
        "derived": _derived_candidates(rng, world),
        "sum": _sum_candidates(rng, world),
        "counterfactual": _counterfactual_candidates(rng, world, quota["counterfactual"] + n),
    }
    rng.shuffle(pools["lookup"])
    chosen: list[_Candidate] = []
    seen: set[str] = set()

    def take(kind: str, k: int) -> None:
        pool = pools[kind]
        while k > 0 and pool:
            c = pool.pop(0)
            text = render_question(c.question, with_transfers=with_transfers)
            if text in seen:
                continue
            seen.add(text)
            chosen.append(c)
            k -= 1

    if mix is not None:
        weight = dict(zip(QUERY_KINDS, mix))
        while len(chosen) < n:
            live = [k for k in QUERY_KINDS if pools[k]]
            if not live:
                break
            # Zero-weight kinds only once every weighted kind has run out.
            weighted = [k for k in live if weight[k] > 0]
            kind = rng.choices(weighted, [weight[k] for k in weighted])[0] if weighted else live[0]
            take(kind, 1)
        return chosen
    for kind in QUERY_KINDS:
        take(kind, quota[kind])
    for kind in ("derived", "counterfactual", "sum", "lookup"):
        take(kind, n - len(chosen))
    return chosen


# --- public API ---------------------------------------------------------------------------------


def world_to_row(
    world: World,
    index: int,
    candidates: list[_Candidate],
    seed: int | None,
    id_prefix: str = "world",
    metadata: dict[str, object] | None = None,
) -> ContextWithQueries:
    context_id = f"{id_prefix}-{index:05d}"
    depths = world.depths()
    context = Context(
        id=context_id,
        text=world.text,
        source=SOURCE,
        metadata={
            "seed": seed,
            "index": index,
            "depth": max(depths.values()),
            "n_entities": len(world.entities),
            "n_transfers": len(world.transfers),
            "unit": world.unit,
            **(metadata or {}),
        },
    )
    with_transfers = bool(world.transfers)
    queries = []
    for c in candidates:
        text = render_question(c.question, with_transfers=with_transfers)
        queries.append(
            Query(
                id=Query.make_id(context_id, text),
                context_id=context_id,
                text=text,
                gold_answer=str(int(c.answer)),
                kind=c.kind,
            )
        )
    return ContextWithQueries(context=context, queries=tuple(queries))


def generate_world(
    rng: random.Random,
    spec: WorldSpec,
    index: int,
    seed: int | None = None,
    id_prefix: str = "world",
    metadata: dict[str, object] | None = None,
) -> ContextWithQueries:
    """One story and its queries, drawn from ``rng``; ``seed`` is only recorded in metadata."""
    world = build_world(rng, spec)
    candidates = _select_queries(rng, world, spec.queries_per_context, spec.query_mix)
    return world_to_row(world, index, candidates, seed, id_prefix, metadata)


def context_rng(seed: int, index: int) -> random.Random:
    """The generator of context ``index``: independent of how many contexts come before it."""
    return random.Random(f"{SOURCE}:{seed}:{index}")


def generate_corpus(n_contexts: int, seed: int = 0, spec: WorldSpec = WorldSpec()) -> list[ContextWithQueries]:
    if n_contexts < 0:
        raise ValueError("n_contexts must be non-negative")
    return [generate_world(context_rng(seed, i), spec, i, seed=seed) for i in range(n_contexts)]


# --- the mixed corpus ---------------------------------------------------------------------------

# Short chains, mostly stated facts: the raw context at a small test budget should do.
EASY_SPEC = WorldSpec(n_entities=(4, 6), max_depth=2, n_transfers=(0, 1), query_mix=(0.6, 0.3, 0.1, 0.0))
# Deep chains, transfers and mostly counterfactuals: where sleep-time work should pay off.
HARD_SPEC = WorldSpec(n_entities=(7, 10), max_depth=6, n_transfers=(1, 3), query_mix=(0.05, 0.25, 0.2, 0.5))
MIXED_PREFIX = "mixed"


def generate_mixed_corpus(n_contexts: int, seed: int = 0, hard_fraction: float = 0.5) -> list[ContextWithQueries]:
    """Easy and hard contexts side by side, so the best (variant, test budget) differs per context.

    Context i draws its difficulty first from its own generator, then its story: it does not
    depend on ``n_contexts``, and raising ``hard_fraction`` only turns some easy contexts hard.
    """
    if n_contexts < 0:
        raise ValueError("n_contexts must be non-negative")
    if not 0 <= hard_fraction <= 1:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    rows = []
    for i in range(n_contexts):
        rng = random.Random(f"{SOURCE}:{MIXED_PREFIX}:{seed}:{i}")
        difficulty = "hard" if rng.random() < hard_fraction else "easy"
        spec = HARD_SPEC if difficulty == "hard" else EASY_SPEC
        rows.append(generate_world(rng, spec, i, seed=seed, id_prefix=MIXED_PREFIX, metadata={"difficulty": difficulty}))
    return rows
