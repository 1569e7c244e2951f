"""Task: the HTML report over the published warehouse."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.config import RunConfig
from sleeptime.report import write_report
from sleeptime.storage.remote import copy_folder
from sleeptime.storage.warehouse import Warehouse


@task(name="write-report", cache_policy=NO_CACHE)
def write_report_task(config: RunConfig) -> str | None:
    logger = get_run_logger()
    try:
        path = write_report(Warehouse(config.warehouse_path), config, config.report_path)
    except ValueError as exc:  # nothing graded yet: a refresh-only warehouse
        logger.warning("no report: %s", exc)
        return None
    logger.info("report written to %s", path)
    if config.report_uri:
        copied = copy_folder(path.parent, config.report_uri, config.lake.s3)
        logger.info("report copied to %s (%d files)", config.report_uri, len(copied))
    return str(path)
