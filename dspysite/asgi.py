"""ASGI entry point: ``uvicorn dspysite.asgi:application --timeout-keep-alive 65`` or gunicorn's
uvicorn workers (docs/DEPLOYMENT.md).

The programs are loaded here, at import, so a bad config or a name clash stops the process with
one line before it accepts traffic.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dspysite.settings")
django.setup(set_prefix=False)

from dspysite.safety import check_or_exit  # noqa: E402

check_or_exit()  # DEBUG off with a missing, development or weak SECRET_KEY: one line each, exit 2

from programs.runtime import get_runtime_or_exit  # noqa: E402
from scheduling.scheduler import build_scheduler_or_exit  # noqa: E402

runtime = get_runtime_or_exit()
scheduler = build_scheduler_or_exit(runtime)  # an invalid cron schedule stops start-up here

import dspysite.urls  # noqa: E402,F401 - build the routes now, not on the first request
from dspysite.application import build_application  # noqa: E402

application = build_application(runtime, scheduler)
