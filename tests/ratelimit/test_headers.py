"""RateLimit-Policy and RateLimit, read back with an RFC 9651 parser as a client would."""

import http_sf

from apikeys.context import Quota
from apikeys.quotas import policy_header
from apikeys.ratelimit_headers import Policy, Remaining, policy_field, ratelimit_field


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
    value = ratelimit_field(
        [Remaining("rpm", 29, 58.2), Remaining("tokens", -3, 0.0), Remaining("in-flight", 2)]
    )
    assert _parse(value) == [
        ("rpm", {"r": 29, "t": 59}),
        ("tokens", {"r": 0, "t": 0}),
        ("in-flight", {"r": 2}),
    ]


def test_names_are_sf_strings() -> None:
    value = policy_field([Policy('odd "name"\\', 1)])
    assert _parse(value) == [('odd "name"\\', {"q": 1})]
