"""The report's HTML rendering: the one Jinja2 environment over ``sleeptime/report/templates/``
and the table renderer that the report and its query-service section share.

It lives here, not in ``sleeptime.report``, because ``sleeptime.service.report_section`` renders
with it and ``sleeptime.report`` imports that module: importing the package from the section
would be circular.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

_TEMPLATES = "report/templates"


def fmt(value: Any, spec: str = ".2f") -> str:
    """``format(value, spec)``, and n/a for a missing number (the report quotes many optional ones)."""
    return "n/a" if value is None else format(value, spec)


# PackageLoader finds the templates next to the code, in a checkout and in an installed wheel
# alike. StrictUndefined: a name a template uses but the code did not pass fails the render
# instead of printing as nothing. trim_blocks/lstrip_blocks keep {% %} lines out of the output.
ENV = Environment(
    loader=PackageLoader("sleeptime", _TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["fmt"] = fmt


def render(template: str, **context: Any) -> str:
    """The template rendered as a plain string (not Markup, so callers may concatenate it)."""
    return str(ENV.get_template(template).render(**context))


def html_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], floats: int = 2) -> str:
    """Rows as an HTML table; missing values (None, NaN) show as n/a, floats with ``floats`` decimals."""
    return render("table.html.j2", rows=list(rows), columns=list(columns), floats=floats)
