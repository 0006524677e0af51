"""``dspy-django``: serve the dspy-cli project in the current directory, from the environment it runs in.

A project's modules import its own packages and whatever else it installed, so the server has to
run in the project's own virtualenv: ``pip install dspy-django`` there, then ``dspy-django serve``
in the project (``dspy.config.yaml`` and ``src/<package>/modules/``). Discovery puts the project's
``src/`` on ``sys.path``; the SQLite database is ``.dspy-django/db.sqlite3`` in the project unless
``DATABASE_URL`` names another (dspysite/paths.py). Without ``SECRET_KEY``, ``serve`` makes a random
one once, in ``.dspy-django/secret_key`` (mode 0600), and reuses it (dspysite/safety.py).

- ``serve [--host H] [--port P] [--workers N] [--no-migrate]``: migrate, then uvicorn (one process)
  or gunicorn with uvicorn workers (``dspysite/gunicorn.conf.py``) when N > 1. Never reloads; for
  the reloading development server: ``dspy-django manage runserver``.
- ``migrate``: apply the database migrations (what a deploy job runs once).
- ``manage <command> ...``: any ``manage.py`` command (``createsuperuser``, ``apikey``, ``programs``, ...).
"""

import argparse
import os
import sys
from pathlib import Path

from dspysite.keepalive import keep_alive_timeout_s
from dspysite.paths import project_state_dir
from dspysite.safety import development_defaults, project_secret_key
from programs.config import config_path

GUNICORN_CONF = Path(__file__).with_name("gunicorn.conf.py")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "manage" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _use_project(getattr(args, "project", None))
    if args.command == "manage":
        _manage(rest)
    elif args.command == "migrate":
        _migrate()
    else:
        _serve(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dspy-django",
        description="Serve the dspy-cli project in the current directory (or --project) with dspy-django.",
    )
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument(
        "--project", help="the dspy-cli project directory (default: $DSPY_PROJECT_DIR, else the current one)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", parents=[project], help="migrate, then serve (gunicorn, uvicorn workers, when --workers > 1)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    serve.add_argument("--workers", type=_at_least_one, default=1, help="worker processes (default: 1)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    commands.add_parser("migrate", parents=[project], help="apply the database migrations")
    # Everything after `manage` goes to Django as it is, --help included.
    commands.add_parser("manage", add_help=False, help="run a manage.py command: manage <command> [args]")
    return parser


def _at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a number of workers (1 or more)")
    return number


def _use_project(project: str | None) -> None:
    """Point the settings at the project; stop with one line when it is not a dspy-cli project."""
    directory = Path(project or os.environ.get("DSPY_PROJECT_DIR") or os.getcwd()).expanduser().resolve()
    config = config_path(os.environ.get("DSPY_CONFIG", ""), str(directory), directory)
    if not config.is_file():
        sys.stderr.write(
            f"dspy-django: {config} not found: run it in a dspy-cli project "
            "(dspy.config.yaml, src/<package>/modules/) or pass --project DIR\n"
        )
        raise SystemExit(2)
    os.environ["DSPY_PROJECT_DIR"] = str(directory)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dspysite.settings")


def _manage(argv: list[str]) -> None:
    from django.core.management import execute_from_command_line

    development_defaults(["dspy-django manage", *argv])
    execute_from_command_line(["dspy-django manage", *argv])


def _migrate() -> None:
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    # call_command skips the system checks, which would load the programs: a migration needs
    # neither the models' config nor their API keys.
    call_command("migrate", interactive=False)
    connections.close_all()


def _serve(args: argparse.Namespace) -> None:
    # Every worker (and every later `serve` of this project) signs with the same random key.
    if not os.environ.get("SECRET_KEY"):
        os.environ["SECRET_KEY"] = project_secret_key(project_state_dir())
    if not args.no_migrate:
        _migrate()
    if args.workers == 1:
        import uvicorn

        uvicorn.run(
            "dspysite.asgi:application",
            host=args.host,
            port=args.port,
            log_level=os.environ.get("LOG_LEVEL", "info").lower(),
            access_log=bool(os.environ.get("ACCESS_LOG")),
            timeout_keep_alive=keep_alive_timeout_s(),
        )
        return
    host = f"[{args.host}]" if ":" in args.host else args.host
    os.environ["BIND"] = f"{host}:{args.port}"
    os.environ["WEB_CONCURRENCY"] = str(args.workers)
    sys.stdout.flush()
    sys.stderr.flush()
    # gunicorn takes this process's place, so signals (SIGTERM's drain) reach its master directly.
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)])  # noqa: S606


if __name__ == "__main__":
    main()
