"""How long an idle keep-alive connection stays open, for every way this service is served.

HTTP/1.1 cannot tell a client that the server is closing a connection at the moment the client
sends on it: the request is reset unread, the client gets a transport error and the server never
saw the request (no log row, no log line). That happens when the server's idle timeout is no longer
than the client's: uvicorn's default, 5 s, equals httpx's pool expiry (issue 16). So the server
waits longer than client pools (httpx 5 s, aiohttp 15 s) and load balancers (AWS ALB, nginx 60 s)
keep an idle connection. Read by gunicorn.conf.py, ``runserver`` (through settings) and
``dspy-django serve``; a lone ``uvicorn`` takes ``--timeout-keep-alive``. docs/DEPLOYMENT.md,
"Keep-alive".
"""

from dspysite.env import env_int

DEFAULT_KEEP_ALIVE_S = 65


def keep_alive_timeout_s() -> int:
    """``KEEP_ALIVE_TIMEOUT`` in seconds, else 65."""
    return env_int("KEEP_ALIVE_TIMEOUT", DEFAULT_KEEP_ALIVE_S)
