"""The split's picking function, directly: weights within ±2% over 10,000 keys, the same key always
the same version, targets refused with what is wrong."""

import pytest

from versions.routing import BUCKETS, TargetInvalid, bucket_of, compile_route, parse_target

KNOWN = {"v1", "v2", "v3", "v4", "v5"}


@pytest.mark.parametrize(
    ("weights", "sticky"), [({"v3": 90, "v4": 10}, "key"), ({"v3": 1, "v4": 1, "v5": 2}, "none")]
)
def test_a_split_sends_each_version_its_share_within_2_percent(weights: dict[str, int], sticky: str) -> None:
    route = compile_route(parse_target({"split": weights, "sticky": sticky}, KNOWN))
    keys = 10_000
    counts = dict.fromkeys(weights, 0)
    for index in range(keys):
        counts[route.pick(f"key:{index}" if sticky == "key" else None)] += 1
    total = sum(weights.values())
    for version, weight in weights.items():
        assert abs(counts[version] / keys - weight / total) <= 0.02, counts


def test_the_same_key_always_gets_the_same_version() -> None:
    route = compile_route(parse_target({"split": {"v3": 50, "v4": 50}, "sticky": "header:X-User"}, KNOWN))
    assert route.sticky == "X-User"
    picks = {user: route.pick(user) for user in (f"user-{i}" for i in range(200))}
    for _ in range(3):
        assert all(route.pick(user) == version for user, version in picks.items())
    assert set(picks.values()) == {"v3", "v4"}
    assert all(0 <= bucket_of(user) < BUCKETS for user in picks)


def test_one_version_and_zero_weights() -> None:
    assert compile_route(parse_target({"version": "v2"}, KNOWN)).pick(None) == "v2"
    route = compile_route(parse_target({"split": {"v1": 0, "v2": 5}}, KNOWN))
    assert {route.pick(f"k{i}") for i in range(100)} == {"v2"}


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ({"version": "v1", "split": {"v1": 1}}, "exactly one"),
        ({"split": {"v1": -1}}, "split.v1"),
        ({"split": {"v1": 0}}, "add up to 0"),
        ({"split": {"v1": 1}, "sticky": "cookie"}, "sticky"),
        ({"version": "v1", "shadow": {"version": "v2", "fraction": 1.5}}, "shadow.fraction"),
        ("v1", "expected an object"),
    ],
)
def test_invalid_targets_say_what_is_wrong(target: object, says: str) -> None:
    with pytest.raises(TargetInvalid, match=says):
        parse_target(target, KNOWN)


def test_an_unknown_version_in_a_target_is_named() -> None:
    with pytest.raises(LookupError, match="'v9'"):
        parse_target({"split": {"v1": 50, "v9": 50}}, KNOWN)
