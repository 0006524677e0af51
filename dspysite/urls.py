"""The process's URLconf: the routes of the process's runtime (dspysite/api.py builds them)."""

from dspysite.api import build_api, build_urlpatterns
from programs.runtime import get_runtime_or_exit

urlpatterns = build_urlpatterns(build_api(get_runtime_or_exit()))
