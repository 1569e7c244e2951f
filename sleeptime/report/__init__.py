"""The self-contained HTML report over the published warehouse."""

from sleeptime.report._html import build_report, write_report

__all__ = ["build_report", "write_report"]
