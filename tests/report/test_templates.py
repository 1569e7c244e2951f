"""The report's Jinja2 templates: escaping, missing values, strictness (no warehouse run needed)."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from jinja2 import UndefinedError

from sleeptime.htmltable import ENV, html_table, render
from sleeptime.report import _html
from sleeptime.service.report_section import query_log_section
from sleeptime.storage import SCHEMAS
from sleeptime.storage.warehouse import apply_migrations


def test_every_template_compiles():
    names = ENV.list_templates()
    assert {"report.html.j2", "published_policy.html.j2", "service_traffic.html.j2", "table.html.j2"} <= set(names)
    for name in names:
        ENV.get_template(name)


def test_table_escapes_cells_and_shows_missing_values_as_na():
    rows = iter([{"name": "<b>x</b> & y", "share": 0.12345, "n": 3, "np": np.float64(2.5), "none": None,
                  "nan": float("nan")}])
    page = html_table(rows, ["name", "share", "n", "np", "none", "nan", "<absent>"], floats=1)
    assert page.startswith("<table><thead><tr><th>name</th>") and "<th>&lt;absent&gt;</th>" in page
    assert "<td>&lt;b&gt;x&lt;/b&gt; &amp; y</td>" in page and "<b>" not in page
    assert "<td>0.1</td><td>3</td><td>2.5</td><td>n/a</td><td>n/a</td><td>n/a</td>" in page
    assert html_table([], ["a"]) == "<p><em>no rows</em></p>"


def test_a_variable_the_code_does_not_pass_fails_the_render():
    with pytest.raises(UndefinedError, match="head"):
        render("report.html.j2")


def _policy(version, target_met):
    summary = {"target_accuracy": 0.9, "target_met": target_met, "required_accuracy": None, "expected_accuracy": 0.8123,
               "expected_cost": 123.456, "kind_accuracy": {"b<k>": 0.5, "a&k": 0.75},
               "traffic": {"source": "log <window>", "queries_in_window": 42},
               "allocation": {"sleep_tokens": 1234.0, "sleep_tokens_full_grid": 98765.0, "sleep_calls": 3,
                              "sleep_calls_full_grid": 9, "contexts_per_budget": {"none": 0, "sm<a>ll": 4, "large": 2}}}
    return SimpleNamespace(version=version, summary=summary)


def test_published_policy_section_escapes_names_and_formats_numbers(monkeypatch):
    monkeypatch.setattr(_html, "load_published_policy", lambda con: _policy("<script>alert(1)</script>", False))
    page, numbers = _html.published_policy_section(None)
    assert "<script>" not in page and "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in page
    assert "target\n90% over" in page and "needs n/a expected accuracy" in page and "planned 81.2% at 123.5" in page
    assert "(<b>target not reachable</b>: the most accurate plan)" in page  # the template's own markup
    assert "per kind:\na&amp;k 75.0%, b&lt;k&gt; 50.0%." in page  # sorted; a budget with no contexts left out
    assert "contexts per sleep budget\nsm&lt;a&gt;ll: 4, large: 2;" in page
    assert "1,234 of 98,765 sleep tokens (99% saved)" in page and "log &lt;window&gt; (42 queries" in page
    assert numbers["allocation_sleep_tokens_saved"] == pytest.approx(1 - 1234 / 98765)

    monkeypatch.setattr(_html, "load_published_policy", lambda con: _policy("v1", True))
    assert "not reachable" not in _html.published_policy_section(None)[0]
    monkeypatch.setattr(_html, "load_published_policy", lambda con: None)
    assert _html.published_policy_section(None) == ("<h2>Published policy</h2><p>No policy is published yet.</p>", {})


def test_service_section_escapes_budget_names_and_quotes_the_traffic():
    con = duckdb.connect()
    apply_migrations(con)
    start = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)
    rows = [dict(request_id=f"q{i}", received_at=start + timedelta(minutes=i), tenant="acme", context_id="c1",
                 question_sha256=f"s{i}", sleep_budget="<b>big</b>", test_budget="t0", fallback=False,
                 predicted_accuracy=0.8, prompt_tokens=50, completion_tokens=10, cost_usd=0.5, latency_ms=100.0 + i,
                 selection_us=20.0, status="answered", attempts=1, run_id="service-20260105") for i in range(2)]
    rows.append(dict(request_id="q2", received_at=start, tenant="acme", context_id="c1", question_sha256="s0",
                     status="failed", attempts=3, prompt_tokens=0, completion_tokens=0, cost_usd=0.0,
                     run_id="service-20260105"))
    con.register("log", pa.Table.from_pylist(rows, schema=SCHEMAS["query_log"]))
    con.execute("INSERT INTO query_log BY NAME SELECT * FROM log")
    page = query_log_section(con, t=2.5)
    assert page.startswith('<section id="service-traffic">') and page.rstrip().endswith("</section>")
    assert "3 queries (2 answered, 1 failed) from\n1 tenant(s) on 1 context(s), 2026-01-05 12:00 UTC" in page
    assert "$1.0000" in page and "t = 2.5:" in page and "&micro;s" in page
    assert page.count("<table>") == 2 and "<td>&lt;b&gt;big&lt;/b&gt;</td>" in page and "<b>big" not in page
