"""Which version an alias sends a call to: one version, or a weighted split picked by a
deterministic hash of a sticky value (the caller's API key, or a header's value), plus a shadow.

Compiled once per alias change (:func:`compile_route`), so a call's pick is a hash and a bisect.
"""

import bisect
import hashlib
import random
from dataclasses import dataclass
from typing import Any

BUCKETS = 10_000  # split weights are resolved to 1/10,000 of the traffic
STICKY_KEY, STICKY_NONE, HEADER_PREFIX = "key", "none", "header:"


class TargetInvalid(ValueError):
    """An alias target that is not one version, a valid split or a valid shadow (422)."""


@dataclass(frozen=True, slots=True)
class Route:
    versions: tuple[str, ...]
    bounds: tuple[int, ...]  # cumulative bucket bounds, one per version
    sticky: str  # "key", "none", or a header name
    shadow: str = ""  # the version that also runs a sampled fraction of the calls
    shadow_fraction: float = 0.0

    def pick(self, sticky_value: str | None) -> str:
        """The version for a caller: the same sticky value always gets the same version."""
        if len(self.versions) == 1:
            return self.versions[0]
        bucket = bucket_of(sticky_value) if sticky_value else random.randrange(BUCKETS)  # noqa: S311
        return self.versions[bisect.bisect_right(self.bounds, bucket)]

    def shadowed(self) -> bool:
        return bool(self.shadow) and random.random() < self.shadow_fraction  # noqa: S311


def bucket_of(value: str) -> int:
    """A stable bucket in [0, BUCKETS) for ``value``: the same in every process and every run."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def parse_target(raw: Any, known: set[str]) -> dict[str, Any]:
    """A target as stored: ``{"version"}`` or ``{"split", "sticky"}``, maybe with ``"shadow"``.

    Raises :class:`TargetInvalid` (what is wrong) or :class:`LookupError` (the unknown version)."""
    if not isinstance(raw, dict):
        raise TargetInvalid("expected an object with `version` or `split`")
    if ("version" in raw) == ("split" in raw):
        raise TargetInvalid("give exactly one of `version` (one version) or `split` (weights)")
    target: dict[str, Any] = {}
    if "version" in raw:
        target["version"] = _known(raw["version"], known)
    else:
        target["split"], target["sticky"] = _split(raw["split"], raw.get("sticky", STICKY_KEY), known)
    if raw.get("shadow") is not None:
        target["shadow"] = _shadow(raw["shadow"], known)
    return target


def _known(version: Any, known: set[str]) -> str:
    if not isinstance(version, str):
        raise TargetInvalid(f"version: expected a version name such as 'v3', got {version!r}")
    if version not in known:
        raise LookupError(f"unknown version {version!r}")
    return version


def _split(split: Any, sticky: Any, known: set[str]) -> tuple[dict[str, float], str]:
    if not isinstance(split, dict) or not split:
        raise TargetInvalid("split: expected an object of version -> weight, such as {'v3': 90, 'v4': 10}")
    weights = {}
    for version, weight in split.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise TargetInvalid(f"split.{version}: expected a weight >= 0, got {weight!r}")
        weights[_known(version, known)] = weight
    if sum(weights.values()) <= 0:
        raise TargetInvalid("split: the weights add up to 0")
    valid = sticky in (STICKY_KEY, STICKY_NONE) or (
        isinstance(sticky, str) and sticky.startswith(HEADER_PREFIX) and len(sticky) > len(HEADER_PREFIX)
    )
    if not valid:
        raise TargetInvalid(f"sticky: expected 'key', 'none' or 'header:<Name>', got {sticky!r}")
    return weights, sticky


def _shadow(shadow: Any, known: set[str]) -> dict[str, Any]:
    if not isinstance(shadow, dict):
        raise TargetInvalid("shadow: expected {'version': 'v5', 'fraction': 0.2}")
    fraction = shadow.get("fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise TargetInvalid(f"shadow.fraction: expected a number in (0, 1], got {fraction!r}")
    return {"version": _known(shadow.get("version"), known), "fraction": float(fraction)}


def compile_route(target: dict[str, Any]) -> Route:
    """The route of a stored target (already checked by :func:`parse_target`)."""
    shadow = target.get("shadow") or {}
    if "version" in target:
        versions, bounds, sticky = (target["version"],), (BUCKETS,), STICKY_NONE
    else:
        weights = {version: weight for version, weight in target["split"].items() if weight > 0}
        total = sum(weights.values())
        running, cumulative = 0.0, []
        for weight in weights.values():
            running += weight
            cumulative.append(round(running / total * BUCKETS))
        versions, bounds = tuple(weights), tuple(cumulative)
        sticky = target.get("sticky", STICKY_KEY)
        if sticky.startswith(HEADER_PREFIX):
            sticky = sticky[len(HEADER_PREFIX) :]
    return Route(versions, bounds, sticky, shadow.get("version", ""), shadow.get("fraction", 0.0))


def target_versions(target: dict[str, Any]) -> list[str]:
    """Every version a target runs (answers and shadow)."""
    versions = [target["version"]] if "version" in target else list(target.get("split") or {})
    if target.get("shadow"):
        versions.append(target["shadow"]["version"])
    return versions
