"""What a production server refuses to start with, checked before it accepts traffic.

With ``DEBUG`` off, a server (uvicorn on ``dspysite.asgi``, or gunicorn's master before it forks)
stops with one line per problem on stderr and exit status 2 when ``SECRET_KEY`` is unset, is the
public development value, or is what Django's ``check --deploy`` calls weak (``security.W009``:
under 50 characters, under 5 unique ones, or Django's ``django-insecure-`` prefix). Sessions,
CSRF tokens and signed values are only as secret as that key.

``dspy-django serve`` writes a random key once per project directory (:func:`project_secret_key`)
and every worker reads the same file; ``manage.py runserver`` turns ``DEBUG`` on
(:func:`development_defaults`), so ``make run`` needs no setting.

API keys are on by default with ``DEBUG`` off (``programs.config``); ``DSPY_AUTH=false`` opens the
API, and start-up says so in one warning line (:func:`auth_warning`).
"""

import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)

# Development only: a fixed key keeps sessions valid across runserver's reloads. Refused in production.
DEVELOPMENT_SECRET_KEY = "dev-insecure-dspy-django-secret-key-change-me"  # noqa: S105
SECRET_KEY_FILENAME = "secret_key"  # noqa: S105 - a file name
# Set by a process that has checked (gunicorn's master): its workers do not check or warn again.
CHECKED_VARIABLE = "DSPY_STARTUP_CHECKED"
PREFIX = "dspy-django: cannot start: "


def secret_key_problems(secret_key: str, from_environment: bool, debug: bool) -> list[str]:
    """One sentence per reason the key is unfit for production (none with DEBUG on)."""
    if debug:
        return []
    if not from_environment:
        return [
            "DEBUG is off and SECRET_KEY is not set: set it to a long random value "
            "(`dspy-django serve` makes one per project), or DEBUG=true for development"
        ]
    if secret_key == DEVELOPMENT_SECRET_KEY:
        return ["SECRET_KEY is the public development value: set a long random one"]
    weak = (
        len(secret_key) < SECRET_KEY_MIN_LENGTH
        or len(set(secret_key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
        or secret_key.startswith(SECRET_KEY_INSECURE_PREFIX)
    )
    if weak:
        return [
            f"SECRET_KEY is weak (Django's security.W009): {len(secret_key)} characters, "
            f"{len(set(secret_key))} unique; use {SECRET_KEY_MIN_LENGTH}+ random characters "
            f"without the {SECRET_KEY_INSECURE_PREFIX!r} prefix"
        ]
    return []


def auth_warning(auth: bool, debug: bool) -> str | None:
    """The one warning line of a production server whose API is open to anyone who reaches it."""
    if auth or debug:
        return None
    return (
        "API keys are off (DSPY_AUTH=false or server.auth: false) with DEBUG off: "
        "every program and log is open to anyone who can reach this server"
    )


def check_or_exit() -> None:
    """For server entry points: each refusal on one line of stderr, then exit 2; else the warning."""
    from django.conf import settings

    if os.environ.get(CHECKED_VARIABLE):
        return
    problems = secret_key_problems(settings.SECRET_KEY, settings.SECRET_KEY_FROM_ENVIRONMENT, settings.DEBUG)
    if problems:
        sys.stderr.write("".join(f"{PREFIX}{problem}\n" for problem in problems))
        sys.stderr.flush()
        raise SystemExit(2)
    auth = _auth_on(settings)
    warning = auth_warning(auth, settings.DEBUG) if auth is not None else None
    if warning:
        sys.stderr.write(f"dspy-django: WARNING: {warning}\n")
        sys.stderr.flush()
    os.environ[CHECKED_VARIABLE] = "1"


def _auth_on(settings: object) -> bool | None:
    """``server.auth`` as the config and environment resolve it; None when the config is broken
    (the server then stops on it with its own line)."""
    from programs.config import ConfigError, config_path, load_config

    path = config_path(settings.DSPY_CONFIG, settings.DSPY_PROJECT_DIR, settings.BASE_DIR)  # type: ignore[attr-defined]
    try:
        return load_config(path).config.server.auth
    except ConfigError:
        return None


def project_secret_key(state_dir: Path) -> str:
    """The project's own random key: created once (mode 0600) in its state directory, then reused."""
    path = state_dir / SECRET_KEY_FILENAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)  # 64 characters
    try:
        # O_EXCL: two `serve`s starting at once agree on the first one written.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key


def development_defaults(argv: Sequence[str]) -> None:
    """``runserver`` is the development server: DEBUG on unless the environment says otherwise."""
    if "runserver" in argv[1:2]:
        os.environ.setdefault("DEBUG", "true")
