"""The registry's writes and reads (sync ORM: management command, admin, API through
``sync_to_async``, start-up). Every write tells this process's live view at once
(:func:`versions.live.changed`); the other workers see it at their next poll."""

import contextlib
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from programs.program import Program
from versions import live
from versions.models import Alias, AliasHistory, Version
from versions.routing import TargetInvalid, parse_target
from versions.states import canonical_state, code_sha256, loaded_state, sha256_json

PRODUCTION = "production"
NUMBERING_ATTEMPTS = 10  # workers registering at once race for the next number


class NothingToRollBack(Exception):
    """The alias has no move left to undo (409)."""


def register(
    program: Program,
    state: Any,
    *,
    note: str = "",
    by: str = "",
    lineage: dict[str, Any] | None = None,
    score: float | None = None,
) -> tuple[Version, bool]:
    """The version of ``state`` for the program's current code: the existing one, or a new number.

    ``lineage`` and ``score`` describe a new version (an optimization's: where it came from and its
    validation score); an existing version keeps its own. Never moves an alias.
    Raises :class:`versions.states.StateMismatch` when the state does not fit the code."""
    canonical = canonical_state(program, state)
    return _register(program, canonical, note=note, by=by, lineage=lineage or {}, score=score)


def _register(
    program: Program,
    canonical: dict[str, Any],
    *,
    note: str,
    by: str,
    lineage: dict[str, Any] | None = None,
    score: float | None = None,
) -> tuple[Version, bool]:
    content = {
        "program": program.name,
        "state_sha256": sha256_json(canonical),
        "code_sha256": code_sha256(program),
        "model_alias": program.model_alias,
    }
    for _ in range(NUMBERING_ATTEMPTS):
        existing = Version.objects.filter(**content).first()
        if existing is not None:
            return existing, False
        number = (Version.objects.filter(program=program.name).aggregate(n=Max("number"))["n"] or 0) + 1
        try:
            with transaction.atomic():
                version = Version.objects.create(
                    **content,
                    number=number,
                    state=canonical,
                    note=note,
                    created_by=by,
                    lineage=lineage or {},
                    score=score,
                )
        except IntegrityError:
            continue  # another process took that number (or registered the same content): look again
        live.changed()
        return version, True
    raise RuntimeError(f"{program.name}: could not number a new version after {NUMBERING_ATTEMPTS} attempts")


def register_loaded(program: Program) -> Version:
    """Start-up: the state the program loaded is a version; the first one becomes ``production``."""
    version, _ = _register(program, loaded_state(program), note="loaded at start-up", by="start-up")
    if not Alias.objects.filter(program=program.name, name=PRODUCTION).exists():
        with contextlib.suppress(IntegrityError):  # another worker made it production first
            set_alias(program.name, PRODUCTION, {"version": version.label}, by="start-up")
    return version


def resolve(program: str, asked: str) -> Version:
    """The version ``asked`` names: a version (``v3``), or an alias pointing at one version
    (``""``: ``production``). Raises :class:`LookupError` saying what is missing or ambiguous."""
    asked = asked or PRODUCTION
    if asked.startswith("v") and asked[1:].isdigit():
        found = Version.objects.filter(program=program, number=int(asked[1:])).first()
        if found is None:
            raise LookupError(f"{program} has no version {asked!r} (GET /api/programs/{program}/versions)")
        return found
    alias = Alias.objects.filter(program=program, name=asked).first()
    if alias is None:
        raise LookupError(f"{program} has no version or alias {asked!r}")
    label = alias.target.get("version")
    if label is None:
        raise LookupError(f"{program}@{asked} is a split ({alias.target.get('split')}): name one version")
    return resolve(program, label)


def labels(program: str) -> set[str]:
    return {f"v{n}" for n in Version.objects.filter(program=program).values_list("number", flat=True)}


def set_alias(program: str, alias: str, raw_target: Any, *, by: str = "") -> Alias:
    """Point ``alias`` at a version or a split (and shadow); the move is kept in the history.

    Raises :class:`TargetInvalid` (422) or :class:`LookupError` naming an unknown version (404)."""
    if not alias or len(alias) > 100 or (alias.startswith("v") and alias[1:].isdigit()):
        raise TargetInvalid(f"alias name {alias!r}: 1-100 characters, and not a version name such as 'v3'")
    target = parse_target(raw_target, labels(program))
    return _move(program, alias, target, by=by, action="set")


def _move(program: str, alias: str, target: dict[str, Any], *, by: str, action: str) -> Alias:
    with transaction.atomic():
        row = Alias.objects.select_for_update().filter(program=program, name=alias).first()
        before = row.target if row is not None else None
        if row is None:
            row = Alias.objects.create(program=program, name=alias, target=target, updated_by=by)
        else:
            row.target, row.updated_by = target, by
            row.save(update_fields=["target", "updated_by", "updated_at"])
        AliasHistory.objects.create(
            program=program, alias=alias, before=before, after=target, action=action, by=by
        )
    live.changed()
    return row


def rollback(program: str, alias: str, *, by: str = "") -> Alias:
    """Move ``alias`` back to where it pointed before its latest move not yet rolled back.

    Raises :class:`LookupError` (no such alias) or :class:`NothingToRollBack`."""
    if not Alias.objects.filter(program=program, name=alias).exists():
        raise LookupError(f"{program} has no alias {alias!r}")
    with transaction.atomic():
        last = (
            AliasHistory.objects.select_for_update()
            .filter(program=program, alias=alias, action="set", rolled_back=False)
            .order_by("-id")
            .first()
        )
        if last is None or last.before is None:
            raise NothingToRollBack(f"{program}@{alias} has no earlier target to roll back to")
        last.rolled_back = True
        last.save(update_fields=["rolled_back"])
        return _move(program, alias, last.before, by=by, action="rollback")


def versions_listing(program: str) -> list[dict[str, Any]]:
    """The program's versions, oldest first, with the aliases that run each one."""
    from versions.routing import target_versions

    aliases: dict[str, list[str]] = {}
    for row in Alias.objects.filter(program=program):
        for label in target_versions(row.target):
            aliases.setdefault(label, []).append(row.name)
    return [
        {
            "version": version.label,
            "aliases": sorted(set(aliases.get(version.label, []))),
            "note": version.note,
            "created_at": version.created_at.isoformat(),
            "created_by": version.created_by,
            "code_sha256": version.code_sha256,
            "state_sha256": version.state_sha256,
            "model_alias": version.model_alias,
            "score": version.score,
            "lineage": version.lineage,
        }
        for version in Version.objects.filter(program=program).order_by("number")
    ]


def version_entry(version: Version, created: bool) -> dict[str, Any]:
    return {
        "version": version.label,
        "created": created,
        "note": version.note,
        "created_at": version.created_at.isoformat(),
        "code_sha256": version.code_sha256,
        "state_sha256": version.state_sha256,
        "score": version.score,
        "lineage": version.lineage,
    }


def aliases_listing(program: str) -> list[dict[str, Any]]:
    return [
        {
            "alias": row.name,
            **row.target,
            "updated_at": row.updated_at.isoformat(),
            "updated_by": row.updated_by,
        }
        for row in Alias.objects.filter(program=program).order_by("name")
    ]


def history_listing(program: str, alias: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    rows = AliasHistory.objects.filter(program=program)
    if alias is not None:
        rows = rows.filter(alias=alias)
    return [
        {
            "alias": row.alias,
            "before": row.before,
            "after": row.after,
            "action": row.action,
            "by": row.by,
            "at": row.at.isoformat(),
        }
        for row in rows.order_by("-id")[:limit]
    ]
