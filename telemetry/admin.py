"""Admin: the inference log (read-only) and the per-program stats dashboard.

Both stay fast with millions of log rows: the dashboard reads only the aggregates, and the log
list avoids the two full scans Django's admin would otherwise run per page (an exact ``COUNT(*)``
of the table, and ``SELECT DISTINCT program`` for the program filter). Measured on 10 million
rows: docs/TELEMETRY.md, "A month of logs".
"""

import math
import re
from collections.abc import Iterable
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections, router
from django.db.models import Min, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from telemetry import charts, selectors
from telemetry.models import TOTAL, InferenceLog, ProgramStats

TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


class LogPaginator(Paginator):
    """A count that never scans the table, and pages no deeper than the count an index gives.

    Unfiltered on PostgreSQL: the planner's row estimate (``pg_class.reltuples``, kept current by
    autovacuum), free at any size. Otherwise at most ``CAP + 1`` rows are counted ("10,001" means
    more). Either way the pages stop at ``CAP`` rows (200 of 50): a page further back would be an
    ``OFFSET`` walking every newer row; the date filter reaches any day in one index range instead.
    """

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        if not isinstance(object_list, QuerySet):
            return len(object_list)
        if not object_list.query.where:
            estimate = estimated_rows(object_list.model)
            if estimate > self.CAP:
                return estimate
        # Unordered: the count needs no sort (an ORDER BY would make PostgreSQL sort every match
        # of a feedback filter before counting the first CAP + 1).
        return object_list.order_by()[: self.CAP + 1].count()

    @cached_property
    def num_pages(self) -> int:
        return min(super().num_pages, math.ceil((self.CAP + 1) / self.per_page))


def estimated_rows(model: type[Model]) -> int:
    """PostgreSQL's estimate of a table's rows (-1: never analysed); -1 on other databases."""
    connection = connections[router.db_for_read(model)]
    if connection.vendor != "postgresql":
        return -1
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row else -1


class ProgramFilter(admin.SimpleListFilter):
    """Program names from the aggregates (one row per program), not a DISTINCT over the log."""

    title = "program"
    parameter_name = "program"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        totals = ProgramStats.objects.filter(period_s=TOTAL).order_by("program")
        return [(name, name) for name in totals.values_list("program", flat=True)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(program=value) if value else queryset


class StatusFilter(admin.SimpleListFilter):
    """The HTTP statuses the service answers with (README's error table): a fixed list, no scan."""

    title = "status"
    parameter_name = "status"
    STATUSES = (200, 400, 401, 403, 404, 409, 413, 422, 429, 499, 500, 502, 503, 504)

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(str(status), str(status)) for status in self.STATUSES]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(status_code=int(value)) if value and value.isdigit() else queryset


class VersionFilter(admin.SimpleListFilter):
    """The versions that ran calls (of the chosen program), one index probe each, never a DISTINCT.

    Each label is the smallest version above the previous one (``MIN`` on the (program, version)
    index): a handful of probes per program where ``SELECT DISTINCT version`` reads every row.
    """

    title = "version"
    parameter_name = "version"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        chosen = request.GET.get("program")
        programs = (
            [chosen]
            if chosen
            else ProgramStats.objects.filter(period_s=TOTAL).values_list("program", flat=True)
        )
        labels = sorted({label for program in programs for label in logged_versions(program)})
        return [(label, label) for label in labels]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(version=value) if value else queryset


def logged_versions(program: str, limit: int = 50) -> list[str]:
    """A program's versions in its log rows (not ""), walked up the (program, version) index."""
    found: list[str] = []
    rows = InferenceLog.objects.filter(program=program)
    while len(found) < limit:
        above = rows.filter(version__gt=found[-1] if found else "").aggregate(next=Min("version"))["next"]
        if above is None:
            break
        found.append(above)
    return found


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the telemetry writer: viewable, never added, edited or deleted here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(InferenceLog)
class InferenceLogAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at", "program", "status_code", "success", "duration_ms", "total_tokens", "cost_usd",
        "answered_by", "attempts", "request_id", "trace_id",
    )  # fmt: skip
    list_filter = (
        ProgramFilter,
        StatusFilter,
        VersionFilter,
        "success",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("request_id",)
    search_help_text = "Exact request id (X-Request-ID) or trace id (OpenTelemetry)"
    paginator = LogPaginator
    show_full_result_count = False
    list_per_page = 50

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """Read under the plans the filters need (``read_plans``), the page's rows included."""
        plans = self.read_plans(request)
        if not plans:
            return super().changelist_view(request, extra_context)
        with ExitStack() as stack:
            for plan in plans:
                stack.enter_context(plan)
            response = super().changelist_view(request, extra_context)
            if isinstance(response, TemplateResponse):
                response.render()  # the page's rows are read while rendering
        return response

    def read_plans(self, request: HttpRequest) -> list[AbstractContextManager]:
        """By program, status, version or failures only: planned on their own index
        (``selectors.newest_rows_plan``); a version's rows are all old once a newer one runs, so a
        walk down the created_at index would pass every newer row first."""
        narrowed = any(request.GET.get(name) for name in ("program", "status", "version"))
        if narrowed or request.GET.get("success__exact") == "0":
            return [selectors.newest_rows_plan()]
        return []

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """An exact, indexed match: the admin's default (``icontains``) would scan every row.

        A trace id (32 hex digits) may also be a request id (a client's UUID): both are looked up.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        if TRACE_ID.fullmatch(term):
            return queryset.filter(Q(request_id=term) | Q(trace_id=term.lower())), False
        return queryset.filter(request_id=term), False


@admin.register(ProgramStats)
class ProgramStatsAdmin(ReadOnlyAdmin):
    """Its list page is the dashboard: a table of every program and charts over time."""

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        board = selectors.dashboard(request.GET.get("window", "hour"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Program stats",
            "opts": self.model._meta,
            "board": board,
            "table": [_table_row(counters) for counters in board.programs],
            "charts": charts.dashboard_charts(board),
            "versions": _versions(counters.program for counters in board.programs),
            "windows": [("hour", "Last hour"), ("day", "Last day"), ("week", "Last week")],
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/telemetry/dashboard.html", context)


def _versions(programs: Iterable[str]) -> list[dict[str, Any]]:
    """Each versioned program's versions side by side (the same numbers as ``/api/metrics/{P}``)."""
    from programs.runtime import get_runtime
    from telemetry.api import version_board

    served = get_runtime().programs  # a program only in old rows has no versions to show
    boards = [{"program": p, "versions": version_board(p)} for p in programs if p in served]
    return [board for board in boards if board["versions"]]


def _table_row(counters: Any) -> dict[str, Any]:
    row = counters.as_dict()
    row["error_percent"] = row["error_rate"] * 100
    row["last_call"] = (
        datetime.fromtimestamp(counters.last_call_ts, tz=UTC) if counters.last_call_ts is not None else None
    )
    return row
