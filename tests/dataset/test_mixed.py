"""The mixed easy/hard corpus and the simulated Zipf query log."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from statistics import mean, median

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from sleeptime.cli import app
from sleeptime.dataset import (
    EASY_SPEC,
    HARD_SPEC,
    WorldSpec,
    generate_corpus,
    generate_mixed_corpus,
    load_corpus,
    logged_queries,
    query_counts,
    simulate_query_log,
    write_project_jsonl,
    write_query_log_spool,
)
from sleeptime.domain import ContextWithQueries
from sleeptime.storage import SCHEMAS, Lake
from sleeptime.storage.spool import Spool

# sha256 of generate_corpus(50, seed=7) as project JSONL (= data/demo/corpus.jsonl) before
# query_mix existed: the feature must not move the demo corpus.
DEMO_50_SEED_7_SHA256 = "a334a175a3f0469da3eb88e26648e5ac3925d72befbbbf3879367ed63d6b0ed9"


@lru_cache(maxsize=None)
def mixed(n: int, seed: int = 0, hard_fraction: float = 0.5) -> tuple[ContextWithQueries, ...]:
    return tuple(generate_mixed_corpus(n, seed=seed, hard_fraction=hard_fraction))


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def test_demo_corpus_is_unchanged_by_query_mix(tmp_path):
    assert WorldSpec().query_mix is None
    path = tmp_path / "demo.jsonl"
    write_project_jsonl(generate_corpus(50, seed=7), path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DEMO_50_SEED_7_SHA256


@pytest.mark.parametrize("mix", [(1, 1, 1), (0, 0, 0, 0), (1, -1, 1, 1)])
def test_query_mix_is_validated(mix):
    with pytest.raises(ValueError, match="query_mix"):
        WorldSpec(query_mix=mix)


def test_same_seed_same_corpus_and_log():
    a = generate_mixed_corpus(20, seed=5)
    assert a == generate_mixed_corpus(20, seed=5)
    assert generate_mixed_corpus(8, seed=5) == a[:8]  # context i does not depend on the corpus size
    assert [r.context.text for r in a] != [r.context.text for r in generate_mixed_corpus(20, seed=6)]
    assert [r.context.id for r in a] == [f"mixed-{i:05d}" for i in range(20)]

    log = simulate_query_log(a, 500, seed=3)
    assert log == simulate_query_log(a, 500, seed=3)
    assert log != simulate_query_log(a, 500, seed=4)


def test_hard_fraction_only_turns_easy_contexts_hard():
    assert {r.context.metadata["difficulty"] for r in mixed(30, hard_fraction=0.0)} == {"easy"}
    assert {r.context.metadata["difficulty"] for r in mixed(30, hard_fraction=1.0)} == {"hard"}
    for low, high in zip(mixed(30, hard_fraction=0.3), mixed(30, hard_fraction=0.7)):
        if high.context.metadata["difficulty"] == "easy":
            assert low == high
        if low.context.metadata["difficulty"] == "hard":
            assert low == high


def test_easy_contexts_are_shallower_and_lookup_heavier():
    rows = mixed(120)
    by = {d: [r for r in rows if r.context.metadata["difficulty"] == d] for d in ("easy", "hard")}
    assert all(len(group) >= 30 for group in by.values())

    def share(group: list[ContextWithQueries], kind: str) -> float:
        kinds = Counter(q.kind for r in group for q in r.queries)
        return kinds[kind] / sum(kinds.values())

    easy, hard = by["easy"], by["hard"]
    assert max(r.context.metadata["depth"] for r in easy) <= EASY_SPEC.max_depth
    assert mean(r.context.metadata["depth"] for r in easy) + 1 < mean(r.context.metadata["depth"] for r in hard)
    assert mean(r.context.metadata["n_transfers"] for r in easy) < mean(r.context.metadata["n_transfers"] for r in hard)
    assert share(easy, "lookup") > 2 * share(hard, "lookup")
    assert share(easy, "counterfactual") == 0  # weight 0, and easy stories never run out of other kinds
    assert share(hard, "counterfactual") > 0.4
    # Every context keeps the full set of queries, enough for a per-context policy estimate.
    assert {len(r.queries) for r in rows} == {EASY_SPEC.queries_per_context} == {HARD_SPEC.queries_per_context}


def test_zipf_log_is_skewed_labeled_and_shaped_like_the_query_log():
    corpus = mixed(50)
    start = datetime(2025, 3, 1, tzinfo=timezone.utc)
    rows = simulate_query_log(corpus, 5000, seed=1, start=start, span_days=2)
    counts = query_counts(rows)
    ranked = sorted(counts.values(), reverse=True) + [0] * (len(corpus) - len(counts))
    assert ranked[0] > 10 * median(ranked)
    assert sum(ranked[:5]) / len(rows) > 0.4  # the top 10 % of contexts

    ids = {r.context.id: r for r in corpus}
    for row, query in zip(rows, logged_queries(corpus, rows)):
        assert row["context_id"] in ids and query in ids[row["context_id"]].queries
        assert row["kind"] == query.kind and row["question_chars"] == len(query.text)
        assert row["context_hash"] == ids[row["context_id"]].context.content_hash
        assert start <= row["received_at"] <= start + timedelta(days=2)
        assert row["status"] == "answered" and row["snapshot"] == "simulated"
        assert row["run_id"] == f"service-{row['received_at']:%Y%m%d}"
    assert [r["received_at"] for r in rows] == sorted(r["received_at"] for r in rows)
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert all(list(r) == SCHEMAS["query_log"].names for r in rows)
    pa.Table.from_pylist(rows, schema=SCHEMAS["query_log"])  # every value fits its column

    # The popular contexts are not simply the first ones in the file.
    assert list(counts)[:5] != [r.context.id for r in corpus[:5]]
    assert simulate_query_log(corpus, 0) == []
    with pytest.raises(ValueError):
        simulate_query_log([], 1)


def test_the_spooled_log_reaches_the_lake_once(tmp_path):
    rows = simulate_query_log(list(mixed(10)), 200, seed=2)
    # Spooled twice (say, the command was run again): the same request ids upsert, not double.
    write_query_log_spool(rows, tmp_path / "spool")
    write_query_log_spool(rows, tmp_path / "spool")
    assert write_query_log_spool([], tmp_path / "spool") is None
    spooled, committed = Spool(tmp_path / "spool").take()
    assert spooled["query_log"].num_rows == 400
    lake = Lake(tmp_path / "lake")
    try:
        lake.publish({"run_id": "r-sim", "status": "published", "detail_json": "{}"}, {}, spooled)
        committed()
        assert lake.read("query_log").num_rows == 200
    finally:
        Lake.close_all()
    assert not Spool(tmp_path / "spool").files("query_log")


def test_cli_generates_corpora_and_simulates_traffic(tmp_path):
    runner = CliRunner()
    corpus = tmp_path / "mixed.jsonl"
    result = runner.invoke(app, ["corpus", "generate", "--kind", "mixed", "--contexts", "12", "--seed", "4",
                                 "--hard-fraction", "0.25", "--out", str(corpus)])
    assert result.exit_code == 0, result.output
    assert load_corpus(corpus).rows == generate_mixed_corpus(12, seed=4, hard_fraction=0.25)

    demo = tmp_path / "demo.jsonl"  # the positional form still works
    assert runner.invoke(app, ["corpus", "generate", str(demo), "--contexts", "3"]).exit_code == 0
    assert load_corpus(demo).rows == generate_corpus(3, seed=7)
    assert runner.invoke(app, ["corpus", "generate", "--contexts", "3"]).exit_code == 2

    config = tmp_path / "sleeptime.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\n")
    result = runner.invoke(app, ["traffic", "simulate", "--corpus", str(corpus), "--queries", "300", "--seed", "2",
                                 "--zipf", "1.3", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = _plain(result.output)
    assert "wrote 300 query-log rows" in out and "top 10 % of contexts (2 of 12)" in out
    spooled, _ = Spool(tmp_path / "out" / "spool").take()
    expected = simulate_query_log(generate_mixed_corpus(12, seed=4, hard_fraction=0.25), 300, seed=2, zipf_s=1.3)
    assert spooled["query_log"].to_pylist() == pa.Table.from_pylist(expected, schema=SCHEMAS["query_log"]).to_pylist()
