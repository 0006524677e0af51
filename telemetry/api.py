"""Telemetry routes (dspy-cli compatible ``/api/metrics`` and ``/api/logs``, Prometheus ``/metrics``).

``/api/metrics`` reads the database aggregates: the totals of every worker and machine, current
to within the writer's flush interval (``TELEMETRY_FLUSH_INTERVAL_S``). ``?scope=process`` answers
from the answering process's live counters instead (no database read; this worker only).
"""

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from ninja import Query, Router

from programs.program import describe_versions
from programs.responses import ErrorBody, ValidationErrorBody, sse_content
from programs.runtime import get_runtime
from programs.streaming import sse_response
from telemetry import prometheus, selectors
from telemetry.counters import PROCESS_COUNTERS, ProgramCounters
from telemetry.lifecycle import telemetry_writer
from telemetry.live import event_stream
from telemetry.responses import BatchEvent, LogListing, MetricsDetail, MetricsListing

Scope = Literal["all", "process"]
MAX_LOG_LIMIT = 1000

router = Router(tags=["telemetry"])

# What other apps add to each program of /api/metrics (the loop's feedback), installed from their
# AppConfig.ready(): a reader of {program: {key: value}} for the listed programs, run in the same
# thread hop as the stats (telemetry imports none of them).
MetricsSection = Callable[[list[str]], dict[str, dict[str, Any]]]
_metrics_sections: list[MetricsSection] = []


def install_metrics_section(reader: MetricsSection) -> None:
    if reader not in _metrics_sections:
        _metrics_sections.append(reader)


def _unknown(program: str) -> JsonResponse:
    return JsonResponse({"detail": f"Program '{program}' not found. GET /programs lists them."}, status=404)


def writer_status() -> dict[str, Any]:
    """This process's writer: what is waiting, written, dropped (never silently)."""
    writer = telemetry_writer()
    return {
        "queue_depth": writer.depth,
        "queued_bytes": writer.queued_bytes,
        "written": writer.written,
        "dropped": writer.dropped,
        "write_errors": writer.write_errors,
        "flush_interval_s": writer.flush_interval_s,
        "writer_running": writer.running,
    }


@router.get(
    "/api/metrics",
    response={200: MetricsListing, 422: ValidationErrorBody},
    summary="Per-program stats, all workers (dspy-cli field names)",
    description="`api_keys`: every key's spend for a key with the `admin` scope (or a staff session), "
    "else the calling key's own.",
)
async def metrics_list(
    request: HttpRequest,
    sort_by: selectors.SortBy = "calls",
    order: selectors.Order = "desc",
    scope: Scope = "all",
    by: Literal["program", "version"] = "program",
) -> JsonResponse:
    names = list(get_runtime().programs)
    keys: list[dict[str, Any]] = []
    sections: dict[str, dict[str, Any]] = {}
    if scope == "process":
        live = [PROCESS_COUNTERS.programs.get(name) or ProgramCounters(name) for name in names]
        listing = selectors.sort_counters(live, sort_by, order)
    else:
        stored = await sync_to_async(_stored_metrics)(names, sort_by, order, _own_key_id(request))
        listing, keys, sections = stored
    programs = [{**counters.as_dict(), **sections.get(counters.program, {})} for counters in listing]
    body = {"programs": programs, "scope": scope, "api_keys": keys}
    if by == "version":
        body["versions"] = await sync_to_async(_all_version_metrics)(names)
    return JsonResponse({**body, "telemetry": writer_status()})


def _all_version_metrics(names: list[str]) -> list[dict[str, Any]]:
    return [entry for name in names for entry in version_metrics(name)]


def _stored_metrics(
    names: list[str], sort_by: selectors.SortBy, order: selectors.Order, api_key_id: int | None
) -> tuple[list[ProgramCounters], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The database's program stats, spend per key (``api_key_id``'s only, if set) and the installed
    sections, in one hop."""
    listing = selectors.program_stats_list(names, sort_by, order)
    return listing, selectors.key_spend_list(api_key_id), _sections(names)


def _sections(names: list[str]) -> dict[str, dict[str, Any]]:
    """What the installed readers add to each program (on the caller's thread: they read the DB)."""
    sections: dict[str, dict[str, Any]] = {}
    for reader in _metrics_sections:
        for program, values in reader(names).items():
            sections.setdefault(program, {}).update(values)
    return sections


def _own_key_id(request: HttpRequest) -> int | None:
    """The key whose calls and spend the caller may read: its own, unless it is ``admin`` (a staff
    session is) or keys are off (no caller at all); None: every key's."""
    caller = getattr(request, "auth", None)
    return caller.own_key_id if caller is not None else None


@router.get(
    "/api/metrics/{program}",
    response={200: MetricsDetail, 404: ErrorBody, 422: ValidationErrorBody},
    summary="One program's stats, all workers",
)
async def metrics_detail(request: HttpRequest, program: str, scope: Scope = "all") -> JsonResponse:
    if program not in get_runtime().programs:
        return _unknown(program)
    if scope == "process":
        metrics = (PROCESS_COUNTERS.programs.get(program) or ProgramCounters(program)).as_dict()
    else:
        metrics = await sync_to_async(_stored_program_metrics)(program)
    versions = await sync_to_async(version_metrics)(program)
    return JsonResponse({"metrics": metrics, "scope": scope, "versions": versions})


def _stored_program_metrics(program: str) -> dict[str, Any]:
    return {**selectors.program_stats_get(program).as_dict(), **_sections([program]).get(program, {})}


def version_metrics(program: str) -> list[dict[str, Any]]:
    """Each called version of ``program`` with the program totals' fields, its aliases and shadow runs
    (its all-time row, every worker's calls: ``VersionStats``)."""
    aliases = describe_versions(get_runtime().programs[program]).get("aliases", {})
    return [
        {
            "version": version,
            "aliases": sorted(name for name, target in aliases.items() if version in _runs(target)),
            **counters.as_dict(),
            "shadow_count": shadows,
        }
        for version, counters, shadows in selectors.version_stats_list(program)
    ]


def version_board(program: str) -> list[dict[str, Any]]:
    """The versions side by side, as the dashboard and the playground show them: :func:`version_metrics`
    plus each version's error percentage and feedback scores (``[(name, {"count", "mean"})]``, the
    installed ``feedback_by_version`` section of ``/api/metrics``; none without the loop app)."""
    feedback = _sections([program]).get(program, {}).get("feedback_by_version", {})
    return [
        {
            **row,
            "error_percent": row["error_rate"] * 100,
            "feedback": sorted(feedback.get(row["version"], {}).items()),
        }
        for row in version_metrics(program)
    ]


def _runs(target: dict[str, Any]) -> set[str]:
    """The versions an alias target answers with (not its shadow)."""
    return {target["version"]} if "version" in target else set(target.get("split") or {})


@router.get(
    "/api/logs/{program}",
    response={200: LogListing, 404: ErrorBody, 422: ValidationErrorBody},
    summary="A program's newest inference records",
    description="A key without the `admin` scope reads only the calls it made itself; "
    "a staff session, or an `admin` key, reads every caller's.",
)
async def logs_list(
    request: HttpRequest,
    program: str,
    limit: int = Query(50, ge=1, le=MAX_LOG_LIMIT),
    before: str | None = Query(
        None, pattern=selectors.LOG_CURSOR_PATTERN, description="the previous page's `next`: older records"
    ),
    version: str | None = Query(None, max_length=20, description="only the calls this version ran (`v3`)"),
) -> JsonResponse:
    if program not in get_runtime().programs:
        return _unknown(program)
    page = await sync_to_async(selectors.inference_log_page)(
        program, limit, before, _own_key_id(request), version
    )
    return JsonResponse({"logs": page.logs, "count": len(page.logs), "next": page.next})


@router.get(
    "/api/events",
    summary="Live per-batch totals from every worker (Server-Sent Events, until the client leaves)",
    openapi_extra={
        "responses": {
            200: {
                "description": "`event: batch` per committed batch",
                "content": sse_content({"batch": BatchEvent}),
            }
        }
    },
)
async def events(request: HttpRequest) -> StreamingHttpResponse:
    return sse_response(event_stream())


@router.get(
    "/metrics",
    summary="Prometheus exposition",
    openapi_extra={
        "responses": {
            200: {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    },
)
async def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    prometheus.TELEMETRY_QUEUE_DEPTH.set(telemetry_writer().depth)
    body, content_type = await asyncio.to_thread(prometheus.exposition)
    return HttpResponse(body, content_type=content_type)
