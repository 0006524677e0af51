"""Where the server's code is, and where it may write.

A source checkout (``manage.py`` beside ``dspysite/``, also an editable install) writes beside its
code, as ``make run`` always has. An installed copy lives in site-packages, which is no place for
data: it writes into ``.dspy-django/`` of the project it serves (``DSPY_PROJECT_DIR``, else the
current directory), the way ``dspy-django serve`` runs it.
"""

import os
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent.parent
SOURCE_CHECKOUT = (CODE_DIR / "manage.py").is_file()
DATA_DIRNAME = ".dspy-django"


def data_dir() -> Path:
    """The directory for the default SQLite database, collected static files and Prometheus files."""
    if SOURCE_CHECKOUT:
        return CODE_DIR
    return project_state_dir()


def project_state_dir() -> Path:
    """``.dspy-django/`` of the served project, checkout or not: what belongs to the project alone
    (the secret key ``dspy-django serve`` makes for it)."""
    project = os.environ.get("DSPY_PROJECT_DIR") or os.getcwd()
    return Path(project).expanduser().resolve() / DATA_DIRNAME
