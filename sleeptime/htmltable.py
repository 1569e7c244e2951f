"""One HTML table renderer for the report and its query-service section."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def html_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], floats: int = 2) -> str:
    """Rows as an HTML table; missing values (None, NaN) show as n/a, floats with ``floats`` decimals."""
    rows = list(rows)
    if not rows:
        return "<p><em>no rows</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            if v is None or (isinstance(v, float) and v != v):
                cells.append("<td>n/a</td>")
            elif isinstance(v, float):
                cells.append(f"<td>{v:.{floats}f}</td>")
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
