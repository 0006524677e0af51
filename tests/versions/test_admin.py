"""The registry in the admin, in process: the versions list with what changed, an upload that
registers (and refuses a state that does not fit, naming the predictor), promote, alias rollback
and the history."""

import json

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from programs.runtime import get_runtime
from telemetry import storage
from tests.telemetry.factories import make_record
from versions import registry
from versions.models import Alias, AliasHistory, Version
from versions.states import loaded_state

pytestmark = pytest.mark.django_db
P = "QA"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def upload(client: Client, state: dict) -> str:
    file = SimpleUploadedFile("state.json", json.dumps(state).encode(), content_type="application/json")
    answer = client.post(
        "/admin/versions/version/add/", {"program": P, "note": "uploaded", "state_file": file, "alias": ""}
    )
    return answer.content.decode() if answer.status_code == 200 else ""  # 200: the form again, with errors


def test_upload_promote_rollback_and_history(staff: Client) -> None:
    program = get_runtime().programs[P]
    v1 = registry.register_loaded(program)
    state = loaded_state(program)
    name = next(iter(state))
    state[name]["demos"] = [{"question": "ADMIN-Q", "answer": "ADMIN-A"}]
    assert upload(staff, state) == ""
    v2 = Version.objects.get(program=P, number=2)
    listing = staff.get("/admin/versions/version/").content.decode()
    assert "v2" in listing and "1 demos" in listing
    detail = staff.get(f"/admin/versions/version/{v2.pk}/change/").content.decode()
    assert "against v1" in detail and "0 &rarr; 1" in detail

    bad = {name: {**state[name], "demos": [{"question": "q", "rationale": "x"}]}}
    errors = upload(staff, bad)
    assert f"predictor &#x27;{name}&#x27;" in errors and "rationale" in errors
    assert Version.objects.filter(program=P).count() == 2

    staff.post("/admin/versions/version/", {"action": "promote_to_production", "_selected_action": [v2.pk]})
    assert Alias.objects.get(program=P, name="production").target == {"version": "v2"}
    alias = Alias.objects.get(program=P, name="production")
    staff.post("/admin/versions/alias/", {"action": "roll_back", "_selected_action": [alias.pk]})
    assert Alias.objects.get(program=P, name="production").target == {"version": v1.label}
    side_by_side = staff.get("/admin/versions/version/", {"program__exact": P}).content.decode()
    assert "versions side by side" in side_by_side and 'data-version="' not in side_by_side  # no calls yet
    record = make_record(request_id="side-by-side")
    record.program, record.version = P, "v2"
    storage.inference_logs_write([record])
    side_by_side = staff.get("/admin/versions/version/", {"program__exact": P}).content.decode()
    assert 'data-version="v2"' in side_by_side
    history = staff.get("/admin/versions/aliashistory/").content.decode()
    assert AliasHistory.objects.filter(program=P).count() == 3 and "rollback" in history
