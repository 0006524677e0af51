"""Production server: ``gunicorn -c dspysite/gunicorn.conf.py`` (uvicorn workers, never reloads).

Every setting can be overridden by gunicorn's own environment variable (``GUNICORN_CMD_ARGS``) or
the variables read below.
"""

import multiprocessing
import os

wsgi_app = "dspysite.asgi:application"
worker_class = "uvicorn_worker.UvicornWorker"
bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
# Longer than the longest request timeout (server.request_timeout_s, 120 s by default), so a
# graceful stop lets in-flight calls finish.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", 150))
timeout = int(os.environ.get("WORKER_TIMEOUT", 180))
keepalive = 5
reload = False
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
