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
