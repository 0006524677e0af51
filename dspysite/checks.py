"""``check --deploy`` for the middleware applied to the browser paths only.

Django's security, clickjacking and CSRF middleware run on ``/admin/`` and ``/ui/`` (settings'
``BROWSER_MIDDLEWARE``, by ``dspysite.middleware.BrowserMiddleware``), not in ``MIDDLEWARE``, so
Django's own deploy checks would say they are missing (W001-W003, silenced) and skip what depends on
them (HSTS, SSL redirect, CSRF cookie...). These run those checks with the browser stack in place.
"""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks.security import base, csrf

BROWSER_CHECKS = (
    base.check_sts,
    base.check_sts_include_subdomains,
    base.check_sts_preload,
    base.check_content_type_nosniff,
    base.check_ssl_redirect,
    base.check_xframe_deny,
    base.check_referrer_policy,
    base.check_cross_origin_opener_policy,
    csrf.check_csrf_cookie_secure,
)


@register(Tags.security, deploy=True)
def browser_middleware_checks(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    from django.test.utils import override_settings

    with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, *settings.BROWSER_MIDDLEWARE]):
        return [message for check in BROWSER_CHECKS for message in check(app_configs)]
