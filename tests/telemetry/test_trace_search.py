"""The admin log finds a row by its OpenTelemetry trace id, on the partial index of traced rows."""

import secrets

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import User
from django.db import connection
from django.test import RequestFactory

from telemetry import storage
from telemetry.models import InferenceLog
from tests.telemetry.factories import make_record

pytestmark = pytest.mark.django_db


def _search(term: str) -> tuple[list[str], str]:
    """The request ids the admin's log list shows for ``term``, and the page's HTML."""
    request = RequestFactory().get("/admin/telemetry/inferencelog/", {"q": term})
    request.user = User.objects.get(username="root")
    response = site._registry[InferenceLog].changelist_view(request)
    response.render()
    assert response.status_code == 200
    return [row.request_id for row in response.context_data["cl"].result_list], response.rendered_content


def test_a_trace_id_finds_its_row_and_a_request_id_that_looks_like_one_still_finds_its_own() -> None:
    User.objects.create_superuser("root", "root@example.com", "pw")
    trace_id, uuid_request_id = secrets.token_hex(16), secrets.token_hex(16)
    traced = make_record(request_id="traced")
    traced.trace_id = trace_id
    others = [make_record(request_id=f"r{i}") for i in range(50)]
    storage.inference_logs_write([traced, make_record(request_id=uuid_request_id), *others])

    found, page = _search(trace_id.upper())  # as pasted from a backend that shows it in capitals
    assert found == ["traced"]
    assert trace_id in page  # the list's trace id column
    assert _search(uuid_request_id)[0] == [uuid_request_id]
    assert _search("r7")[0] == ["r7"]
    assert InferenceLog.objects.filter(trace_id__isnull=False).count() == 1  # untraced rows hold null


def test_the_trace_id_lookup_can_use_the_partial_index() -> None:
    query = InferenceLog.objects.filter(trace_id=secrets.token_hex(16))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")  # a tiny table: ask whether the index is usable
        try:
            plan = query.explain()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_seqscan")
    else:
        plan = query.explain()
    assert "telemetry_log_trace_id" in plan, plan
