"""WSGI entry point, for management tooling only: the service itself is served through ASGI."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dspysite.settings")

application = get_wsgi_application()
