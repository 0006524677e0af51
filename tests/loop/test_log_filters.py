"""Every filter of the admin's call list gives exactly the right rows, alone and combined.

On a small seeded log (``Seeder``, versions v1..v3, ``seed_feedback``), on SQLite and PostgreSQL:
each filter's first page is the newest 50 matching rows, newest first, and its (capped) count is
the number of matching rows. The expected rows are computed here with plain ORM filters, not
through the admin. The timings at 10 million rows are the kit's (``loadtest/logs_at_scale.py``,
docs/TELEMETRY.md, "Filters at 10 million rows").
"""

from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.db.models import QuerySet
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from loop.models import Feedback
from telemetry.admin import LogPaginator, VersionFilter
from telemetry.models import InferenceLog
from telemetry.seeding import Seeder

pytestmark = pytest.mark.django_db
CAP = 100


@pytest.fixture
def seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LogPaginator, "CAP", CAP)
    User.objects.create_superuser("root", "root@example.com", "pw")
    Seeder(["Alpha", "Beta", "Gamma"], 3_000, 0.2, datetime.now(tz=UTC)).run()
    call_command("seed_feedback", "--fraction", "0.05", stdout=StringIO())


def _logs(**lookups: object) -> QuerySet:
    return InferenceLog.objects.filter(**lookups)


def _feedback(**lookups: object) -> list[str]:
    return list(Feedback.objects.filter(**lookups).values_list("request_id", flat=True))


def _changelist(query: str) -> Any:
    request = RequestFactory().get(f"/admin/telemetry/inferencelog/{query}")
    request.user = User.objects.get(username="root")
    response = site._registry[InferenceLog].changelist_view(request)
    response.render()
    assert response.status_code == 200, query
    return response.context_data["cl"]


def _expected() -> dict[str, QuerySet]:
    corrected = _feedback(correction__isnull=False)
    return {
        "?status=200": _logs(status_code=200),
        "?status=502": _logs(status_code=502),
        "?status=400": _logs(status_code=400),
        "?version=v1": _logs(version="v1"),
        "?version=v3": _logs(version="v3"),
        "?program=Beta&status=200": _logs(program="Beta", status_code=200),
        "?program=Beta&version=v2": _logs(program="Beta", version="v2"),
        "?version=v1&status=502": _logs(version="v1", status_code=502),
        "?feedback_score=any": _logs(request_id__in=_feedback(score__isnull=False)),
        "?feedback_score=low": _logs(request_id__in=_feedback(score__lt=0.5)),
        "?feedback_score=high": _logs(request_id__in=_feedback(score__gte=0.5)),
        "?feedback_score=none": InferenceLog.objects.exclude(request_id__in=_feedback()),
        "?corrected=1": _logs(request_id__in=corrected),
        "?corrected=0": InferenceLog.objects.exclude(request_id__in=corrected),
        "?program=Alpha&corrected=1": _logs(program="Alpha", request_id__in=corrected),
        "?program=Alpha&feedback_score=low": _logs(program="Alpha", request_id__in=_feedback(score__lt=0.5)),
        "?version=v2&corrected=1": _logs(version="v2", request_id__in=corrected),
        "?status=200&version=v3&program=Gamma": _logs(status_code=200, version="v3", program="Gamma"),
    }


def test_each_filter_lists_the_newest_matching_rows_and_counts_them(seeded: None) -> None:
    assert _logs(version="v1").exists() and _logs(version="v3").exists()
    assert 0 < len(_feedback(correction__isnull=False)) < len(_feedback())
    for query, rows in _expected().items():
        matching = rows.count()
        assert matching > 0, query  # every case has rows to get wrong
        cl = _changelist(query)
        newest = list(rows.order_by("-created_at", "-id").values_list("pk", flat=True)[:50])
        assert [row.pk for row in cl.result_list] == newest, query
        assert cl.paginator.count == min(matching, CAP + 1), query


def _offered(query: str) -> list[str]:
    request = RequestFactory().get(f"/admin/telemetry/inferencelog/{query}")
    return [value for value, _ in VersionFilter(request, {}, InferenceLog, None).lookups(request, None)]


def test_the_version_filter_offers_the_logged_versions_without_a_distinct(seeded: None) -> None:
    assert _offered("") == sorted(set(InferenceLog.objects.values_list("version", flat=True)))
    assert _offered("?program=Alpha") == sorted(set(_logs(program="Alpha").values_list("version", flat=True)))


def test_each_filter_reads_its_own_index_and_counts_without_sorting(seeded: None) -> None:
    """The capped count is unordered on both; the plans are SQLite's (PostgreSQL picks by statistics)."""
    with CaptureQueriesContext(connection) as queries:
        _changelist("?corrected=1")
    counts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT COUNT(*)")]
    assert counts and all("ORDER BY" not in sql for sql in counts), counts
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's planner picks by statistics; logs_at_scale.py measures it")
    newest = ("-created_at", "-id")
    cases = {
        "telemetry_log_status_recent": _logs(status_code=400),
        "telemetry_log_version_only": _logs(version="v1"),
        "telemetry_log_program_status": _logs(program="Beta", status_code=400),
        "telemetry_log_version_status": _logs(version="v1", status_code=502),
    }
    for index, rows in cases.items():
        assert index in rows.order_by(*newest)[:50].explain(), index
