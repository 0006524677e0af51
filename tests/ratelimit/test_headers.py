"""RateLimit-Policy and RateLimit, read back with an RFC 9651 parser as a client would."""

import http_sf

from apikeys.context import Quota
from apikeys.quotas import policy, policy_header, remaining


def _parse(value: str) -> list:
    return http_sf.parse(value.encode(), tltype="list")


def test_a_keys_policy_lists_each_quota_it_has() -> None:
    value = policy_header(Quota(rpm=30, tokens_per_day=100000, budget_usd=2.5, max_in_flight=4))
    assert _parse(value) == [
        ("rpm", {"q": 30, "w": 60}),
        ("tokens-per-day", {"q": 100000, "qu": "tokens", "w": 86400}),
        ("budget", {"q": 2500000, "qu": "usd-micros", "w": 2592000}),
        ("in-flight", {"q": 4, "qu": "concurrent-requests"}),
    ]
    assert _parse(policy_header(Quota(rpm=5))) == [("rpm", {"q": 5, "w": 60})]


def test_ratelimit_rounds_reset_up_and_never_goes_negative() -> None:
    value = http_sf.ser([remaining("rpm", 29, 58.2), remaining("tokens", -3, 0.0), remaining("in-flight", 2)])
    assert _parse(value) == [
        ("rpm", {"r": 29, "t": 59}),
        ("tokens", {"r": 0, "t": 0}),
        ("in-flight", {"r": 2}),
    ]


def test_names_are_sf_strings() -> None:
    value = http_sf.ser([policy('odd "name"\\', 1)])
    assert _parse(value) == [('odd "name"\\', {"q": 1})]


def test_the_fields_are_byte_identical_to_the_hand_written_serializer() -> None:
    """The values clients parse today, kept byte for byte now that http_sf writes them."""
    quota = Quota(rpm=30, tokens_per_day=100000, budget_usd=2.5, max_in_flight=4)
    assert policy_header(quota) == (
        '"rpm";q=30;w=60, "tokens-per-day";q=100000;qu="tokens";w=86400, '
        '"budget";q=2500000;qu="usd-micros";w=2592000, "in-flight";q=4;qu="concurrent-requests"'
    )
    states = [remaining("rpm", 29, 58.2), remaining("budget", 1999.7, 0.4), remaining("in-flight", 2)]
    assert http_sf.ser(states) == '"rpm";r=29;t=59, "budget";r=1999;t=1, "in-flight";r=2'
