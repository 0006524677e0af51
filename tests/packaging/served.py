"""What the packaging tests share: a clean environment for the served project, and its database."""

import os
import sqlite3
from pathlib import Path

# What would point the server at this repository's code, data or config instead of the project's.
# SECRET_KEY too: `dspy-django serve` makes the project's own.
REPO_VARIABLES = (
    "DATABASE_URL", "DSPY_CONFIG", "DSPY_PROJECT_DIR", "DJANGO_SETTINGS_MODULE", "PYTHONPATH", "SECRET_KEY",
)  # fmt: skip


def project_env(**extra: str) -> dict[str, str]:
    """This process's environment without the repository's pointers, with the fixture's API key.

    DEBUG off turns API keys on: these tests call the programs without one (``DSPY_AUTH=false``).
    """
    env = {key: value for key, value in os.environ.items() if key not in REPO_VARIABLES}
    return {**env, "OPENAI_API_KEY": "mock-key", "DSPY_AUTH": "false", **extra}


def applied_migrations(database: Path) -> set[str]:
    """The apps whose migrations the SQLite database records as applied."""
    with sqlite3.connect(database) as connection:
        return {app for (app,) in connection.execute("SELECT app FROM django_migrations")}
