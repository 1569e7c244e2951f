"""``python -m sleeptime.service serve|keys ...`` (the same commands as ``sleeptime serve`` and
``sleeptime keys``)."""

from sleeptime.service.cli import service_app

service_app()
