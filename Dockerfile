# Production image: gunicorn with uvicorn workers, no reload, non-root user.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=dspysite.settings \
    BIND=0.0.0.0:8000

WORKDIR /app
COPY . .
# The package with its runtime dependencies (pyproject.toml's ranges, and the tracing extra) at the
# releases CI tested: requirements.txt as constraints, so its tests and tools are never installed.
# pip takes no extras in a constraint: they are dropped from the copy it reads.
RUN sed -E 's/\[[^]]*\]//' requirements.txt > /tmp/constraints.txt \
    && pip install --constraint /tmp/constraints.txt ".[tracing]" \
    && rm /tmp/constraints.txt
RUN python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app app \
    && chown -R app /app
USER app

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"

# Migrations run once per deploy (a job or an init container): `python manage.py migrate`.
# At run time it needs SECRET_KEY (50+ random characters, shared by every replica) and ALLOWED_HOSTS;
# API keys are on (docs/DEPLOYMENT.md, "Safe by default"; a reverse proxy belongs in front).
CMD ["gunicorn", "-c", "dspysite/gunicorn.conf.py"]
