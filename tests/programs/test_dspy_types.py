"""dspy.Image / dspy.Audio request fields: the schema says "a URI string", the program gets a DSPy object."""

import base64
from typing import Any

import dspy
import pytest
from pydantic import ValidationError

from programs.modules.examples import DescribeImage
from programs.schemas import build_input_schema

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-a-png").decode()
WAV = "data:audio/wav;base64," + base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEfmt ").decode()


class Media(dspy.Module):
    def forward(
        self,
        image: dspy.Image,
        maybe: dspy.Image | None,
        many: list[dspy.Image] | None = None,
        named: dict[str, dspy.Image] | None = None,
        pair: tuple[dspy.Image, int] | None = None,
        clip: dspy.Audio | None = None,
        code: dspy.Code | None = None,
    ) -> str:
        return ""


SCHEMA = build_input_schema("Media", Media.forward)


def kwargs(body: dict[str, Any]) -> dict[str, Any]:
    return SCHEMA.to_kwargs(SCHEMA.model.model_validate(body))


def errors(body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as caught:
        SCHEMA.model.model_validate(body)
    return {error["loc"]: error["msg"] for error in caught.value.errors()}


def test_the_json_schema_is_a_uri_string_wherever_the_type_appears() -> None:
    properties = SCHEMA.model.model_json_schema()["properties"]
    image = properties["image"]
    assert (image["type"], image["format"], image["x-dspy-type"]) == ("string", "uri", "Image")
    assert "data:image/" in image["description"]
    untitled = {key: value for key, value in image.items() if key != "title"}
    assert properties["maybe"]["anyOf"] == [untitled, {"type": "null"}]
    assert properties["many"]["anyOf"][0]["items"]["format"] == "uri"
    assert properties["named"]["anyOf"][0]["additionalProperties"]["x-dspy-type"] == "Image"
    assert properties["pair"]["anyOf"][0]["prefixItems"][0]["x-dspy-type"] == "Image"
    clip = properties["clip"]["anyOf"][0]
    assert (clip["type"], clip["format"], clip["x-dspy-type"]) == ("string", "uri", "Audio")
    assert SCHEMA.model.model_json_schema()["required"] == ["image"]


def test_urls_and_data_uris_become_dspy_objects_without_a_download() -> None:
    got = kwargs(
        {
            "image": " https://example.com/cat.png ",
            "many": ["gs://bucket/a.jpg", PNG],
            "named": {"front": PNG},
            "pair": [PNG, 2],
            "clip": WAV,
        }
    )
    assert isinstance(got["image"], dspy.Image)
    assert got["image"].url == "https://example.com/cat.png"  # passed through, not fetched into a data URI
    assert [image.url for image in got["many"]] == ["gs://bucket/a.jpg", PNG]
    assert got["named"]["front"].url == PNG
    assert got["pair"][0].url == PNG and got["pair"][1] == 2
    assert isinstance(got["clip"], dspy.Audio)
    assert (got["clip"].audio_format, got["clip"].data) == ("wav", WAV.partition(",")[2])
    assert got["image"].format() == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]


def test_optional_image_left_out_is_none_or_the_python_default() -> None:
    got = kwargs({"image": PNG})
    assert got["maybe"] is None
    assert "many" not in got  # forward's own default applies


def test_mp3_from_a_browser_is_sent_as_openais_mp3_format() -> None:
    clip = kwargs({"image": PNG, "clip": "data:audio/mpeg;base64,SUQz"})["clip"]
    assert clip.audio_format == "mp3"


def test_dspy_objects_from_python_callers_pass_through() -> None:
    image = dspy.Image(PNG)
    assert kwargs({"image": image})["image"] is image


def test_other_dspy_types_use_their_own_validation() -> None:
    code = kwargs({"image": PNG, "code": "print(1)"})["code"]
    assert isinstance(code, dspy.Code) and code.code == "print(1)"


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        ({"image": "cat.png"}, ("image",), "http(s)://"),
        ({"image": "file:///etc/passwd"}, ("image",), "http(s)://"),
        ({"image": "https://"}, ("image",), "http(s)://"),
        ({"image": 7}, ("image",), "expected a string, got int"),
        ({"image": {"url": "https://example.com/a.png"}}, ("image",), "expected a string, got dict"),
        ({"image": "data:text/plain;base64,aGk="}, ("image",), "data:image/<format>;base64"),
        ({"image": "data:image/png,rawbytes"}, ("image",), "data:image/<format>;base64"),
        ({"image": "data:image/png;base64,not base64!"}, ("image",), "not valid base64"),
        ({"image": "data:image/png;base64,abc"}, ("image",), "not valid base64"),
        ({"image": "data:image/png;base64,"}, ("image",), "not valid base64"),
        ({"image": PNG, "many": [PNG, "nope"]}, ("many", 1), "http(s)://"),
        ({"image": PNG, "clip": "https://example.com/a.wav"}, ("clip",), "audio URLs are not downloaded"),
        ({"image": PNG, "clip": PNG}, ("clip",), "data:audio/<format>;base64"),
        ({"image": "http://[::1/a.png"}, ("image",), "Invalid IPv6 URL"),
    ],
)
def test_a_bad_value_names_its_field(body: dict[str, Any], location: tuple[Any, ...], message: str) -> None:
    found = errors(body)
    assert list(found) == [location]
    assert message in found[location]


PRIVATE = [
    "http://localhost/a.png",
    "http://LOCALHOST./a.png",
    "http://api.localhost:8080/a.png",
    "http://127.0.0.1/a.png",
    "https://user:pw@10.0.0.7/a.png",
    "http://192.168.1.20/a.png",
    "http://172.16.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
    "http://0.0.0.0/a.png",
    "http://[::1]/a.png",
    "http://[fe80::1%25eth0]/a.png",
    "http://[fd00::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://127.1/a.png",  # legacy IPv4 forms HTTP clients still accept
    "http://2130706433/a.png",
    "http://0x7f.0.0.1/a.png",
]


@pytest.mark.parametrize("url", PRIVATE)
def test_private_loopback_and_link_local_hosts_are_refused_by_default(url: str) -> None:
    found = errors({"image": PNG, "many": [url]})
    assert list(found) == [("many", 0)]
    assert "private, loopback or link-local" in found[("many", 0)]
    assert "DSPY_ALLOW_PRIVATE_MEDIA_URLS" in found[("many", 0)]


@pytest.mark.parametrize("url", PRIVATE)
def test_the_setting_allows_private_hosts_for_a_self_hosted_model(url: str, settings: Any) -> None:
    settings.DSPY_ALLOW_PRIVATE_MEDIA_URLS = True
    assert kwargs({"image": url})["image"].url == url.replace("user:pw@", "")


@pytest.mark.parametrize(
    "url",
    ["https://example.com/a.png", "http://8.8.8.8/a.png", "http://[2001:4860::8888]/a.png", "gs://b/a.png"],
)
def test_public_hosts_pass_and_no_name_is_resolved(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any) -> None:
        raise AssertionError("DNS resolved on the request path")

    monkeypatch.setattr("socket.getaddrinfo", no_dns)
    monkeypatch.setattr("socket.gethostbyname", no_dns)
    assert kwargs({"image": url})["image"].url == url


def test_userinfo_is_stripped_before_the_model_sees_the_url() -> None:
    image = kwargs({"image": "https://alice:s3cret@example.com:8443/a.png?size=2#top"})["image"]
    assert image.url == "https://example.com:8443/a.png?size=2#top"
    assert kwargs({"image": "https://@example.com/a.png"})["image"].url == "https://example.com/a.png"


def test_the_bundled_image_example_takes_a_uri_string() -> None:
    schema = build_input_schema("DescribeImage", DescribeImage.forward)
    assert schema.model.model_json_schema()["properties"]["image"]["format"] == "uri"
    assert isinstance(schema.to_kwargs(schema.model.model_validate({"image": PNG}))["image"], dspy.Image)


class Photo(dspy.Image):
    """A program's own subclass."""


def test_a_subclass_is_converted_to_itself_and_described_as_an_image() -> None:
    class Takes(dspy.Module):
        def forward(self, image: Photo) -> str:
            return ""

    schema = build_input_schema("Takes", Takes.forward)
    assert schema.model.model_json_schema()["properties"]["image"]["x-dspy-type"] == "Image"
    assert type(schema.to_kwargs(schema.model.model_validate({"image": PNG}))["image"]) is Photo
