"""dspy.Image and dspy.Audio inputs over a real socket: a URL or data: URI string in the request, an
image or audio content part at the mock LLM, a 422 naming the field for a bad value, and a reference
instead of the base64 in the inference log."""

import base64
import hashlib
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support import Running

pytestmark = pytest.mark.integration

PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
WAV_BYTES = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00@\x1f\x00\x00" * 20
WAV_B64 = base64.b64encode(WAV_BYTES).decode()
OWL = "https://example.com/owl.png"


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


def post(server: Running, path: str, body: object, rid: str = "") -> httpx.Response:
    headers = {"X-Request-ID": rid} if rid else {}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30)


def sent_to_model(mock: Running, tag: str) -> list[dict[str, Any]]:
    """The non-text content parts of the model request whose prompt carries ``tag``."""
    for body in reversed(httpx.get(f"{mock.url}/requests").json()["requests"]):
        content = body["messages"][-1]["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if any(tag in part.get("text", "") for part in parts):
            return [part for part in parts if part["type"] != "text"]
    raise AssertionError(f"no model request mentions {tag}")


def log_entry(server: Running, program: str, rid: str, timeout_s: float = 30) -> dict[str, Any]:
    """The inference log entry of request ``rid``, once the writer has stored it."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = httpx.get(f"{server.url}/api/logs/{program}", params={"limit": 100}).json()["logs"]
        found = [entry for entry in logs if entry["request_id"] == rid]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no log row for {rid}"
        time.sleep(0.05)


def test_an_image_url_reaches_the_model_as_an_image_part(server: Running, mock: Running) -> None:
    tag = uuid.uuid4().hex
    response = post(server, "/LookAtImage", {"image": OWL, "question": f"what bird? {tag}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"answer": f"Echo: [image_url {OWL}]", "received": "Image"}
    assert sent_to_model(mock, tag) == [{"type": "image_url", "image_url": {"url": OWL}}]


def test_an_image_urls_user_and_password_reach_neither_the_model_nor_the_log(
    server: Running, mock: Running
) -> None:
    tag, rid = uuid.uuid4().hex, f"userinfo-{uuid.uuid4().hex[:8]}"
    url = "https://alice:s3cret@example.com/owl.png"
    response = post(server, "/LookAtImage", {"image": url, "question": f"what bird? {tag}"}, rid)
    assert response.status_code == 200, response.text
    assert sent_to_model(mock, tag) == [{"type": "image_url", "image_url": {"url": OWL}}]
    entry = log_entry(server, "LookAtImage", rid)
    assert entry["inputs"]["image"] == OWL
    assert "s3cret" not in json.dumps(entry)


def test_a_data_uri_reaches_the_model_and_the_log_keeps_a_reference(server: Running, mock: Running) -> None:
    tag, rid = uuid.uuid4().hex, f"img-{uuid.uuid4().hex[:8]}"
    response = post(server, "/LookAtImage", {"image": PNG, "question": f"what colour? {tag}"}, rid)
    assert response.status_code == 200, response.text
    assert (
        response.json()["answer"]
        == f"Echo: [image_url image/png {len(PNG_BYTES)} bytes sha256 {sha(PNG_BYTES)}]"
    )
    assert sent_to_model(mock, tag) == [{"type": "image_url", "image_url": {"url": PNG}}]

    entry = log_entry(server, "LookAtImage", rid)
    assert entry["inputs"] == {
        "image": {
            "_media": "image",
            "media_type": "image/png",
            "bytes": len(PNG_BYTES),
            "sha256": sha(PNG_BYTES),
        },
        "question": f"what colour? {tag}",
    }
    assert PNG.partition(",")[2] not in json.dumps(entry)


def test_an_optional_image_may_be_left_out_or_given(server: Running, mock: Running) -> None:
    tag = uuid.uuid4().hex
    absent = post(server, "/MaybeImage", {"question": f"no picture {tag}"})
    assert absent.status_code == 200, absent.text
    assert absent.json() == {"answer": f"Echo: no picture {tag}", "received": "NoneType"}
    assert sent_to_model(mock, tag) == []

    given = post(server, "/MaybeImage", {"question": f"with picture {tag}", "image": OWL})
    assert given.json()["received"] == "Image"
    assert sent_to_model(mock, f"with picture {tag}") == [{"type": "image_url", "image_url": {"url": OWL}}]


def test_a_list_of_images_arrives_as_parts_in_order(server: Running, mock: Running) -> None:
    tag = uuid.uuid4().hex
    response = post(server, "/CompareImages", {"images": [OWL, PNG], "question": f"same? {tag}"})
    assert response.status_code == 200, response.text
    assert response.json()["received"] == ["Image", "Image"]
    assert sent_to_model(mock, tag) == [
        {"type": "image_url", "image_url": {"url": OWL}},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]


def test_audio_reaches_the_model_as_an_input_audio_part(server: Running, mock: Running) -> None:
    rid = f"wav-{uuid.uuid4().hex[:8]}"
    response = post(server, "/Transcribe", {"audio": f"data:audio/wav;base64,{WAV_B64}"}, rid)
    assert response.status_code == 200, response.text
    digest = f"{len(WAV_BYTES)} bytes sha256 {sha(WAV_BYTES)}"
    assert response.json() == {"transcript": f"Echo: [input_audio wav {digest}]", "received": "Audio"}
    requests = httpx.get(f"{mock.url}/requests").json()["requests"]
    parts = [part for body in requests for part in body["messages"][-1]["content"] if isinstance(part, dict)]
    assert {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "wav"}} in parts

    entry = log_entry(server, "Transcribe", rid)
    assert entry["inputs"]["audio"] == {
        "_media": "audio", "media_type": "audio/wav", "bytes": len(WAV_BYTES), "sha256": sha(WAV_BYTES),
    }  # fmt: skip
    assert WAV_B64 not in json.dumps(entry)


@pytest.mark.parametrize(
    ("program", "body", "location", "message"),
    [
        ("LookAtImage", {"image": "owl.png", "question": "q"}, ["image"], "http(s)://"),
        (
            "LookAtImage",
            {"image": "data:image/png;base64,@@@@", "question": "q"},
            ["image"],
            "not valid base64",
        ),
        ("LookAtImage", {"question": "q"}, ["image"], "Field required"),
        ("CompareImages", {"images": [OWL, 5]}, ["images", 1], "expected a string"),
        ("MaybeImage", {"question": "q", "image": "data:audio/wav;base64,AAAA"}, ["image"], "data:image/"),
        ("Transcribe", {"audio": "https://example.com/a.wav"}, ["audio"], "audio URLs are not downloaded"),
        ("LookAtImage", {"image": "http://127.0.0.1:8080/a.png", "question": "q"}, ["image"], "loopback"),
        ("CompareImages", {"images": [OWL, "http://169.254.169.254/x"]}, ["images", 1], "link-local"),
    ],
)
def test_a_bad_value_is_a_422_naming_the_field(
    server: Running, program: str, body: dict[str, Any], location: list[Any], message: str
) -> None:
    response = post(server, f"/{program}", body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][-len(location) :] == location
    assert message in error["msg"]


def test_batch_items_are_converted_too(server: Running, mock: Running) -> None:
    tag = uuid.uuid4().hex
    items = [{"image": OWL, "question": f"batch {tag}"}, {"image": "not a url", "question": "q"}]
    response = httpx.post(f"{server.url}/LookAtImage/batch", json={"inputs": items}, timeout=30)
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first == {"ok": True, "outputs": {"answer": f"Echo: [image_url {OWL}]", "received": "Image"}}
    assert (second["status"], second["errors"][0]["loc"]) == (422, ["image"])
    assert sent_to_model(mock, tag) == [{"type": "image_url", "image_url": {"url": OWL}}]


def test_a_stream_takes_an_image_too(server: Running, mock: Running) -> None:
    tag = uuid.uuid4().hex
    body = {"image": OWL, "question": f"streamed {tag}"}
    response = httpx.post(f"{server.url}/LookAtImage/stream", json=body, timeout=30)
    assert response.status_code == 200, response.text
    finals = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: {") and '"type":"final"' in line.replace(" ", "")
    ]
    assert [final["outputs"] for final in finals] == [
        {"answer": f"Echo: [image_url {OWL}]", "received": "Image"}
    ]
    assert sent_to_model(mock, tag) == [{"type": "image_url", "image_url": {"url": OWL}}]


def test_a_gateways_pipeline_inputs_are_converted_too(server: Running, mock: Running) -> None:
    tag, rid = uuid.uuid4().hex, f"hook-{uuid.uuid4().hex[:8]}"
    response = post(server, "/LookAtImage/PictureHook", {"picture": PNG, "caption": f"hook {tag}"}, rid)
    assert response.status_code == 200, response.text
    assert response.json()["received"] == "Image"
    assert sent_to_model(mock, tag) == [{"type": "image_url", "image_url": {"url": PNG}}]
    assert log_entry(server, "LookAtImage", rid)["inputs"]["picture"]["sha256"] == sha(PNG_BYTES)

    bad = post(server, "/LookAtImage/PictureHook", {"picture": "owl.png", "caption": "q"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][-1] == "image"


def test_the_schemas_say_to_send_a_uri_string(server: Running) -> None:
    programs = {p["name"]: p for p in httpx.get(f"{server.url}/programs").json()["programs"]}
    image = programs["LookAtImage"]["input_schema"]["properties"]["image"]
    assert (image["type"], image["format"], image["x-dspy-type"]) == ("string", "uri", "Image")
    audio = programs["Transcribe"]["input_schema"]["properties"]["audio"]
    assert (audio["type"], audio["format"], audio["x-dspy-type"]) == ("string", "uri", "Audio")
    items = programs["CompareImages"]["input_schema"]["properties"]["images"]["items"]
    assert items["format"] == "uri"
    spec = httpx.get(f"{server.url}/openapi.json").json()
    body_ref = spec["paths"]["/LookAtImage"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    definition = spec["components"]["schemas"][body_ref["$ref"].rsplit("/", 1)[-1]]
    assert definition["properties"]["image"]["format"] == "uri"
