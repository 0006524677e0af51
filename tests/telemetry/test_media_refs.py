"""Captured bodies keep a reference to each data: URI instead of its bytes."""

import base64
import hashlib
import json

import dspy
from pydantic_core import to_json

from telemetry.media_refs import media_reference
from telemetry.records import Body, InferenceRecord, to_log_values

CONTENT = bytes(range(256)) * 40  # 10 KiB
B64 = base64.b64encode(CONTENT).decode()
SHA = hashlib.sha256(CONTENT).hexdigest()[:16]


def test_a_data_uri_value_becomes_a_reference() -> None:
    assert media_reference(f"data:image/png;base64,{B64}") == {
        "_media": "image",
        "media_type": "image/png",
        "bytes": len(CONTENT),
        "sha256": SHA,
    }


def test_percent_encoded_and_typeless_data_uris() -> None:
    assert media_reference("data:,hello%20world") == {
        "_media": "text",
        "media_type": "text/plain",
        "bytes": 11,
        "sha256": hashlib.sha256(b"hello world").hexdigest()[:16],
    }
    svg = media_reference("data:image/svg+xml;charset=utf-8,%3Csvg%2F%3E")
    assert (svg["media_type"], svg["bytes"]) == ("image/svg+xml", len(b"<svg/>"))


def test_a_data_uri_inside_a_longer_text_is_replaced_in_place() -> None:
    text = f'see [{{"type": "image_url", "image_url": {{"url": "data:image/png;base64,{B64}"}}}}] here'
    reference = f"[image/png, {len(CONTENT)} bytes, sha256 {SHA}]"
    assert (
        media_reference(text) == f'see [{{"type": "image_url", "image_url": {{"url": "{reference}"}}}}] here'
    )


def test_text_that_only_mentions_data_is_left_alone() -> None:
    for text in ("data: the numbers, then the chart", "metadata:x,y", "big data:", ""):
        assert media_reference(text) == text


def test_bad_base64_is_still_referenced_not_stored() -> None:
    ref = media_reference("data:image/png;base64,abc")  # wrong padding
    assert ref["bytes"] == 3 and len(ref["sha256"]) == 16


def test_the_log_row_keeps_references_at_any_depth_and_the_other_values() -> None:
    inputs = {
        "question": "what is in it?",
        "n": 3,
        "ok": True,
        "nothing": None,
        "images": [f"data:image/jpeg;base64,{B64}", "https://example.com/a.png"],
        "deep": {"clip": f"data:audio/wav;base64,{B64}"},
    }
    raw = json.dumps(inputs).encode()
    out = json.dumps({"answer": f"data:image/png;base64,{B64}"}).encode()
    record = InferenceRecord(
        "P",
        "mock",
        "openai/mock-model",
        "r1",
        200,
        0.0,
        1.0,
        inputs=Body(raw, len(raw)),
        outputs=Body(out, len(out)),
    )
    row = to_log_values(record)
    reference = {"bytes": len(CONTENT), "sha256": SHA}
    assert row["inputs"] == {
        "question": "what is in it?",
        "n": 3,
        "ok": True,
        "nothing": None,
        "images": [{"_media": "image", "media_type": "image/jpeg", **reference}, "https://example.com/a.png"],
        "deep": {"clip": {"_media": "audio", "media_type": "audio/wav", **reference}},
    }
    assert row["outputs"] == {"answer": {"_media": "image", "media_type": "image/png", **reference}}


def test_dspy_objects_logged_as_keyword_arguments_become_the_same_references() -> None:
    """Doors without a request body log ``to_json(kwargs)``: DSPy's own serialisation of its types."""
    kwargs = {
        "image": dspy.Image(f"data:image/png;base64,{B64}"),
        "link": dspy.Image("https://example.com/a.png"),
        "clip": dspy.Audio(f"data:audio/wav;base64,{B64}"),
        "album": [dspy.Image(f"data:image/gif;base64,{B64}")],
        "code": dspy.Code(code="print(1)"),
    }
    raw = to_json(kwargs, fallback=str)
    record = InferenceRecord(
        "P", "mock", "openai/mock-model", "r1", 200, 0.0, 1.0, inputs=Body(raw, len(raw))
    )
    reference = {"bytes": len(CONTENT), "sha256": SHA}
    inputs = to_log_values(record)["inputs"]
    assert inputs["image"] == {"_media": "image", "media_type": "image/png", **reference}
    assert inputs["link"] == "https://example.com/a.png"
    assert inputs["clip"] == {"_media": "audio", "media_type": "audio/wav", **reference}
    assert inputs["album"] == [{"_media": "image", "media_type": "image/gif", **reference}]
    assert inputs["code"] == json.loads(raw)["code"]  # not media: as DSPy serialised it
    assert B64 not in json.dumps(inputs)


def test_urls_are_logged_without_their_user_and_password() -> None:
    assert media_reference("https://alice:s3cret@example.com/a.png?x=1") == "https://example.com/a.png?x=1"
    assert media_reference("HTTP://token@example.com/a.png") == "http://example.com/a.png"
    assert media_reference("https://example.com/a@2x.png") == "https://example.com/a@2x.png"  # a path's @
    assert media_reference("write to alice@example.com") == "write to alice@example.com"
    assert media_reference("https://u:p@[::1/broken") == "https://u:p@[::1/broken"  # not a URL: as it is
