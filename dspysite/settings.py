"""Django settings, read from the environment with safe defaults.

Only what Django itself needs lives here; the DSPy side (models, programs, server limits) is read
from ``dspy.config.yaml`` by :mod:`programs.config`.
"""

import dj_database_url

from dspysite import paths
from dspysite.env import env_bool, env_float, env_int, env_list, env_str
from dspysite.keepalive import keep_alive_timeout_s
from dspysite.safety import DEVELOPMENT_SECRET_KEY

BASE_DIR = paths.CODE_DIR  # the code: this checkout, or site-packages when installed
SOURCE_CHECKOUT = paths.SOURCE_CHECKOUT  # runserver reloads on changes to the code only in a checkout
# What the server writes (default SQLite database, collected static files): this checkout, or the
# served project's .dspy-django/ when installed (dspysite/paths.py). Never site-packages.
DATA_DIR = paths.data_dir()

DEBUG = env_bool("DEBUG", False)
# Unset, the development value keeps `manage.py` commands and runserver working; a server with DEBUG
# off refuses to start with it, or with a weak key (dspysite/safety.py).
SECRET_KEY_FROM_ENVIRONMENT = bool(env_str("SECRET_KEY", ""))
SECRET_KEY = env_str("SECRET_KEY", "") or DEVELOPMENT_SECRET_KEY
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# HTTPS behind the TLS proxy (docs/DEPLOYMENT.md, "Safe by default"): Django's SecurityMiddleware
# applies these to the browser paths (BROWSER_MIDDLEWARE); `check --deploy` checks them there
# (dspysite/checks.py). The proxy says a request came over HTTPS with X-Forwarded-Proto, which
# uvicorn honours from FORWARDED_ALLOW_IPS only.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# /mcp's DNS-rebinding check takes ALLOWED_HOSTS (any port) plus these, in the MCP SDK's syntax
# (`host`, `host:port`, `host:*`; origins `https://host`, ...): docs/MCP.md.
MCP_ALLOWED_HOSTS = env_list("MCP_ALLOWED_HOSTS", [])
MCP_ALLOWED_ORIGINS = env_list("MCP_ALLOWED_ORIGINS", [])

INSTALLED_APPS = [
    # programs first: its `runserver` (uvicorn, one event loop) replaces Django's WSGI one.
    "programs",
    "telemetry",
    "apikeys",
    "ui",
    "scheduling",
    "versions",
    "loop",
    # Batch jobs (docs/JOBS.md) on Django's Tasks API: the django-tasks backport and its database
    # backend (the `jobworker` command runs them; the web processes never do).
    "jobs",
    "django_tasks",
    "django_tasks_db",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    # Its database backends, model and migration metrics and browser-path middleware, in /metrics.
    "django_prometheus",
]

# The API path carries only async-native middleware: every MiddlewareMixin middleware costs two
# thread hops per request under ASGI. Django's session/auth/CSRF/messages stack is applied to the
# admin and HTML pages only, by `dspysite.middleware.BrowserMiddleware`.
MIDDLEWARE = [
    # Async-only; names the request's server span after its route; removes itself when tracing is
    # off (docs/TELEMETRY.md, "Traces").
    "telemetry.server_spans.RouteNaming",
    # django-cors-headers (async-capable: no thread hop); removes itself when no CORS origin is
    # configured (dspysite/cors.py, docs/DEVELOPING.md).
    "dspysite.cors.CorsMiddleware",
    "dspysite.middleware.json_errors_middleware",
    # Async-only: holds what a request's code entered (the API key's quota reservation) until its
    # answer is sent, streamed body included, and puts its headers (RateLimit) on the answer.
    "dspysite.middleware.request_lifetime_middleware",
    "dspysite.middleware.BrowserMiddleware",
]
BROWSER_MIDDLEWARE = [
    # django-prometheus's request metrics (sync MiddlewareMixin): browser paths only, like the rest.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
# django-cors-headers, for the origins dspysite/cors.py reads from CORS_ALLOWED_ORIGINS and the config
# (no credentials: API keys travel in the Authorization header).
CORS_ALLOW_METHODS = ("GET", "POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("X-Request-ID", "Retry-After", "WWW-Authenticate")
CORS_PREFLIGHT_MAX_AGE = 600
# Paths that get the browser middleware stack (admin and server-rendered pages).
BROWSER_PATH_PREFIXES = ("/admin/", "/ui/")
# admin.E408/E409/E410 look for the session/auth/messages middleware in MIDDLEWARE; they are
# applied by BrowserMiddleware for the admin instead. So are the security, clickjacking and CSRF
# middleware (security.W001-W003): dspysite/checks.py runs the checks that depend on them with
# BROWSER_MIDDLEWARE in place.
SILENCED_SYSTEM_CHECKS = [
    *("admin.E408", "admin.E409", "admin.E410"),
    *("security.W001", "security.W002", "security.W003"),
]

ROOT_URLCONF = "dspysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],  # each app's templates/ (APP_DIRS): they ship inside the packages
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "dspysite.wsgi.application"
ASGI_APPLICATION = "dspysite.asgi.application"


def _database() -> dict:
    """SQLite (WAL, IMMEDIATE transactions) by default; PostgreSQL with psycopg's pool by URL."""
    url = env_str("DATABASE_URL", "")
    if not url:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{DATA_DIR / 'db.sqlite3'}"
    config = dj_database_url.parse(url, conn_max_age=0)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        busy_ms = env_int("SQLITE_BUSY_TIMEOUT_MS", 20000)  # how long a write waits for the lock
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": busy_ms / 1000,
            "init_command": (
                f"PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout={busy_ms};"
            ),
        }
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # CONN_MAX_AGE > 0 leaks connections under ASGI; the pool is the supported way (Django 5.1+).
        config["OPTIONS"] = {
            "pool": {
                "min_size": env_int("DB_POOL_MIN_SIZE", 1),
                "max_size": env_int("DB_POOL_MAX_SIZE", 4),
                "timeout": env_int("DB_POOL_TIMEOUT_S", 10),
            }
        }
    # SQLite tests run in memory; named, since the engine below is not Django's own, which is how
    # pytest-django (under xdist) tells an in-memory test database from one to suffix per worker.
    in_memory = ":memory:" if config["ENGINE"] == "django.db.backends.sqlite3" else None
    config["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME") or in_memory}
    # django-prometheus's subclasses of the same backends: django_db_* series in /metrics.
    config["ENGINE"] = PROMETHEUS_DB_ENGINES.get(config["ENGINE"], config["ENGINE"])
    return config


PROMETHEUS_DB_ENGINES = {
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
}


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"

# Request bodies above this size are refused with 413 before Django reads them.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_BODY_BYTES", 1024 * 1024)

# Path of dspy.config.yaml; DSPY_PROJECT_DIR serves an existing dspy-cli project instead.
DSPY_CONFIG = env_str("DSPY_CONFIG", "")
DSPY_PROJECT_DIR = env_str("DSPY_PROJECT_DIR", "")
# Factory of the auth on protected program routes (None: no check); API keys plug in here, so the
# serving core does not import them. The factory itself returns None unless server.auth is on.
DSPY_ROUTE_AUTH = "apikeys.auth.api_key_auth"
# Requests an API key may have in flight at once, across every server, when the key sets no
# max_in_flight of its own (apikeys/quotas.py): one client cannot take every slot of a program.
# 0: no default cap (keys without quotas then cost no limit-store round trip).
API_KEY_DEFAULT_MAX_IN_FLIGHT = env_int("API_KEY_DEFAULT_MAX_IN_FLIGHT", 64)
# With API keys on, /openapi.json and /docs need a key (or a staff session) too; true publishes them.
DSPY_PUBLIC_DOCS = env_bool("DSPY_PUBLIC_DOCS", False)

# Cron jobs (dspy-cli CronGateways, docs/DSPY_CLI.md): each fire time runs once across every process
# on the database. DSPY_SCHEDULER=off keeps this process out (jobs run on the others).
DSPY_SCHEDULER = env_bool("DSPY_SCHEDULER", True)
# At shutdown a run in progress starts no new item and gets this long to finish, then is cancelled.
DSPY_SCHEDULER_SHUTDOWN_TIMEOUT_S = env_float("DSPY_SCHEDULER_SHUTDOWN_TIMEOUT_S", 30.0)
# Tests only: the scheduler's clock runs SCALE times faster from the Unix time ORIGIN (same in every process).
DSPY_SCHEDULER_TIME_SCALE = env_float("DSPY_SCHEDULER_TIME_SCALE", 1.0)
DSPY_SCHEDULER_TIME_ORIGIN = env_float("DSPY_SCHEDULER_TIME_ORIGIN", 0.0)

# Image URLs naming localhost or a private, loopback or link-local IP are refused (422): the model's
# provider would fetch them. True for a self-hosted model that fetches from the private network
# (docs/DEVELOPING.md, "Images and audio"). Host names are never resolved here: the egress proxy's job.
DSPY_ALLOW_PRIVATE_MEDIA_URLS = env_bool("DSPY_ALLOW_PRIVATE_MEDIA_URLS", False)

# Batch jobs (docs/JOBS.md): the task engine is the database (SQLite or PostgreSQL, whichever
# DATABASE_URL names), so a queued or running job survives a restart and any number of
# `manage.py jobworker` processes on any number of machines share the work.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
# POST /api/jobs' body (JSONL) may be this large; every other path keeps MAX_BODY_BYTES.
JOBS_MAX_BODY_BYTES = env_int("JOBS_MAX_BODY_BYTES", 1024 * 1024 * 1024)
JOBS_MAX_LINES = env_int("JOBS_MAX_LINES", 1_000_000)
# Items per engine task: the unit a worker claims (and a sweep re-enqueues).
JOBS_CHUNK_SIZE = env_int("JOBS_CHUNK_SIZE", 100)
# A worker's claim on its items lasts this long unless its heartbeat renews it (every third of
# it); a killed worker's items are taken back by the next sweep after that (every JOBS_SWEEP_S).
JOBS_LEASE_S = env_float("JOBS_LEASE_S", 30.0)
JOBS_SWEEP_S = env_float("JOBS_SWEEP_S", 10.0)
# Finished jobs and their results are pruned after this many days (`manage.py jobs prune`).
JOBS_RETENTION_DAYS = env_int("JOBS_RETENTION_DAYS", 7)
# inputs_url fetches and webhooks never go to private, loopback or link-local addresses unless true.
DSPY_WEBHOOK_ALLOW_PRIVATE = env_bool("DSPY_WEBHOOK_ALLOW_PRIVATE", False)
# Background runs' webhooks are signed with this (Standard Webhooks: `whsec_` + base64); unset: unsigned.
DSPY_WEBHOOK_SECRET = env_str("DSPY_WEBHOOK_SECRET", "")

# Telemetry (docs/TELEMETRY.md). Inputs/outputs are stored unless turned off here or per program
# (programs.<Name>.capture_io: false in dspy.config.yaml); bodies over the size limit are not kept.
TELEMETRY_CAPTURE_IO = env_bool("TELEMETRY_CAPTURE_IO", True)
TELEMETRY_MAX_CAPTURE_BYTES = env_int("TELEMETRY_MAX_CAPTURE_BYTES", 64 * 1024)
TELEMETRY_QUEUE_MAX = env_int("TELEMETRY_QUEUE_MAX", 50_000)
# ... and in bytes (captured bodies + ~1 KB a record): without it, 50,000 records of two 64 KiB
# bodies could hold ~6 GB per worker. Records past either bound are dropped and counted.
TELEMETRY_QUEUE_MAX_BYTES = env_int("TELEMETRY_QUEUE_MAX_BYTES", 256 * 1024 * 1024)
TELEMETRY_BATCH_SIZE = env_int("TELEMETRY_BATCH_SIZE", 500)
TELEMETRY_FLUSH_INTERVAL_S = env_float("TELEMETRY_FLUSH_INTERVAL_S", 0.5)
TELEMETRY_SHUTDOWN_TIMEOUT_S = env_float("TELEMETRY_SHUTDOWN_TIMEOUT_S", 10.0)

# The loop (docs/LOOP.md). Call traces follow capture_io when CAPTURE_TRACES is on: each LM call's
# messages and completion, every string cut at LOOP_TRACE_MAX_CHARS (marked); their own queue,
# bounded like telemetry's. On by default in development only: in production they store every
# prompt (users' data included), cost ~0.25 ms of CPU a request and ~13 MiB of server memory over
# the first few thousand calls (docs/PERFORMANCE.md, "Call traces"): opt in with CAPTURE_TRACES=true.
CAPTURE_TRACES = env_bool("CAPTURE_TRACES", DEBUG)
LOOP_TRACE_MAX_CHARS = env_int("LOOP_TRACE_MAX_CHARS", 20_000)
LOOP_TRACE_MAX_LM_CALLS = env_int("LOOP_TRACE_MAX_LM_CALLS", 500)  # the first ones of a call
LOOP_TRACE_QUEUE_MAX = env_int("LOOP_TRACE_QUEUE_MAX", 20_000)
LOOP_TRACE_QUEUE_MAX_BYTES = env_int("LOOP_TRACE_QUEUE_MAX_BYTES", 128 * 1024 * 1024)

# Live dashboard events (telemetry/live.py) travel through the channel layer: Redis across
# workers and machines when REDIS_URL is set, in-memory (one process) otherwise.
REDIS_URL = env_str("REDIS_URL", "")
CHANNEL_LAYERS = {
    "default": (
        {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

# For `runserver` (programs/ reads settings, not dspysite/): dspysite/keepalive.py says why.
KEEP_ALIVE_TIMEOUT_S = keep_alive_timeout_s()

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line names the request it was logged for ("-" outside one): programs/context.py.
    "filters": {"request_id": {"()": "programs.context.RequestIdFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # DSPy logs every LM-call warning at WARNING; keep them, but not its INFO chatter.
        "dspy": {"level": "WARNING"},
        # DSPy 3.3's LM client: two INFO lines per LM call ("LiteLLM completion() model=...") on
        # its own stdout handler and again through ours.
        "LiteLLM": {"level": "WARNING"},
    },
}
