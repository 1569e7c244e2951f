"""The pipeline's SQL plan computes the same ids as the domain types."""

import duckdb
import pytest

from sleeptime.domain import Variant
from sleeptime.pipeline import VARIANT_ID_SQL


@pytest.mark.parametrize("model, budget, sample, pv", [
    ("reference", "small", 0, "v1"),
    ('we"ird\\ model', "ünïcode büdget", 3, "v2"),
    ("openai/gpt-4o-mini", "large", 12, "v1"),
])
def test_variant_ids_in_sql_equal_the_domain_ids(model, budget, sample, pv):
    h = "ab" * 32
    sql = VARIANT_ID_SQL.format(hash="?", model="?", budget="?", sample="?::INTEGER", pv="?")
    got = duckdb.connect().execute(f"SELECT {sql}", [h, model, budget, sample, pv]).fetchone()[0]
    assert got == Variant.make_id(h, model, budget, sample, pv)


def _publish(lake, run_id: str) -> None:
    lake.publish({"run_id": run_id, "status": "published", "detail_json": "{}"}, {}, {})


def test_ingest_skips_unchanged_lines_and_parses_only_what_changed(tmp_path):
    from sleeptime.dataset import load_corpus, write_demo_corpus, write_project_jsonl
    from sleeptime.pipeline import ingest_corpus
    from sleeptime.storage import Lake

    corpus = write_demo_corpus(tmp_path / "corpus.jsonl", contexts=6, seed=4)
    lake = Lake(tmp_path / "lake")
    try:
        first = ingest_corpus(lake, "r1", corpus)
        assert first.diff.counts() == {"new": 6, "changed": 0, "unchanged": 0, "removed": 0}
        assert first.parsed_lines == 6
        _publish(lake, "r1")

        again = ingest_corpus(lake, "r2", corpus)
        assert again.diff.counts() == {"new": 0, "changed": 0, "unchanged": 6, "removed": 0}
        assert again.parsed_lines == 0 and again.staged == 0  # every line recognised by its hash
        _publish(lake, "r2")

        rows = load_corpus(corpus).rows
        extra_query = rows[0].queries[0].model_copy(update={"id": "q_added", "text": "A new question?"})
        rows[0] = rows[0].model_copy(update={"queries": (*rows[0].queries, extra_query)})  # same text, new query
        rows[1] = rows[1].model_copy(update={"context": rows[1].context.model_copy(update={"text": "Ann has 3 apples."})})
        removed = rows.pop()
        write_project_jsonl(rows, corpus)
        edited = ingest_corpus(lake, "r3", corpus)
        assert edited.diff.counts() == {"new": 0, "changed": 1, "unchanged": 4, "removed": 1}
        assert edited.diff.removed == [removed.context.id]
        assert edited.parsed_lines == 2  # the edited and the changed line only
        staged_queries = lake.read_staged("queries").column("query_id").to_pylist()
        assert "q_added" in staged_queries
        _publish(lake, "r3")
        # The edited line's new hash is recorded: the next refresh skips it too.
        assert ingest_corpus(lake, "r4", corpus).parsed_lines == 0
    finally:
        Lake.close_all()
