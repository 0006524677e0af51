"""``manage.py runserver``: the development server, through ASGI on one event loop.

Django's own runserver is WSGI and gives every async view its own event loop, which breaks the
shared asyncio state this service depends on (limits, pools, the telemetry queue). This one runs
uvicorn with auto-reload. It is for development only: production never reloads and runs
``gunicorn -c dspysite/gunicorn.conf.py``.
"""

import os
import re
from argparse import ArgumentParser
from typing import Any

import uvicorn
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from programs.config import ConfigError, config_path, load_config
from programs.devserver import is_listening, mock_address, start_mock_llm

# Flags that override a server setting; the server process (and its reloads) reads the variable.
FLAG_VARIABLES = {
    "sync_workers": "DSPY_SYNC_WORKER_THREADS",
    "max_concurrent": "DSPY_MAX_CONCURRENT_PER_PROGRAM",
}
_ADDRPORT = re.compile(r"^(?:(?P<addr>[^:]+|\[[0-9a-fA-F:]+\]):)?(?P<port>\d+)$")


def admin_hint(host: str, port: int) -> str:
    """Where the admin is and, while it has no superuser, how to create one."""
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/admin/"
    try:
        has_user = get_user_model().objects.filter(is_superuser=True).exists()
    except DatabaseError:  # not migrated yet
        has_user = False
    if has_user:
        return f"Admin: {url}"
    return f"Admin: {url} (no user yet: create one with `python manage.py createsuperuser`)"


class Command(BaseCommand):
    help = (
        "Development server: uvicorn (ASGI, one event loop) that RELOADS on code changes. "
        "Never use it in production; run `gunicorn -c dspysite/gunicorn.conf.py` there, which never "
        "reloads. Starts the bundled mock LLM when the config uses it."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000", help="[addr:]port to listen on")
        parser.add_argument("--noreload", action="store_true", help="Do not reload on code changes")
        parser.add_argument(
            "--sync-workers",
            type=int,
            help="Threads for sync-only programs (overrides server.sync_worker_threads and "
            "DSPY_SYNC_WORKER_THREADS)",
        )
        parser.add_argument(
            "--max-concurrent",
            type=int,
            help="Calls in flight per program before 429 (overrides server.max_concurrent_per_program "
            "and DSPY_MAX_CONCURRENT_PER_PROGRAM)",
        )
        parser.add_argument(
            "--mock-llm",
            choices=["auto", "on", "off"],
            default="auto",
            help="Start the bundled mock LLM: auto = when a configured model is the mock and nothing "
            "listens on its port",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        match = _ADDRPORT.match(options["addrport"])
        if not match:
            raise CommandError(f"{options['addrport']!r} is not [addr:]port")
        host, port = (match["addr"] or "127.0.0.1").strip("[]"), int(match["port"])
        for flag, variable in FLAG_VARIABLES.items():
            if options[flag] is not None:
                if options[flag] < 1:
                    raise CommandError(f"--{flag.replace('_', '-')} must be at least 1")
                os.environ[variable] = str(options[flag])
        mock = self._maybe_start_mock(options["mock_llm"])
        self.stdout.write(admin_hint(host, port))
        try:
            uvicorn.run(
                "dspysite.asgi:application",
                host=host,
                port=port,
                reload=not options["noreload"],
                reload_dirs=self._reload_dirs(),
                timeout_keep_alive=settings.KEEP_ALIVE_TIMEOUT_S,
                log_level=settings.LOG_LEVEL.lower(),
            )
        finally:
            if mock is not None:
                mock.terminate()
                mock.wait(timeout=10)

    def _maybe_start_mock(self, mode: str) -> Any:
        if mode == "off":
            return None
        path = config_path(settings.DSPY_CONFIG, settings.DSPY_PROJECT_DIR, settings.BASE_DIR)
        try:
            config = load_config(path).config
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        address = mock_address(config)
        if address is None:
            if mode == "on":
                raise CommandError(f"--mock-llm on: no model in {path} uses the bundled mock")
            return None
        host, port = address
        if is_listening(host, port):
            self.stdout.write(f"Mock LLM already listening at http://{host}:{port}/v1; using it")
            return None
        process = start_mock_llm(settings.BASE_DIR, host, port)
        self.stdout.write(
            f"No real model configured: started the bundled mock LLM (loadtest/mock_llm.py, pid "
            f"{process.pid}) at http://{host}:{port}/v1. Point models.default in {path} at a real model."
        )
        return process

    def _reload_dirs(self) -> list[str]:
        # An installed copy's code is site-packages: not worth watching, and too big to.
        dirs = [str(settings.BASE_DIR)] if settings.SOURCE_CHECKOUT else []
        if settings.DSPY_PROJECT_DIR:
            dirs.append(settings.DSPY_PROJECT_DIR)
        return dirs
