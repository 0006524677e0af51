"""Admin: the inference log gains the loop's columns, filters and action; feedback and datasets.

The log's admin is telemetry's (``telemetry.admin.InferenceLogAdmin``); the loop registers a
subclass in its place (apps are loaded after telemetry), so telemetry knows nothing of feedback:
a link to each call's page, filters by feedback score and by "has a correction" (each a
``request_id IN (feedback subquery)`` on the feedback table's indexes), and the action "add the
selected calls to a dataset".
"""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from loop import datasets
from loop.models import CallTrace, Dataset, DatasetItem, Evaluation, Feedback, Optimization
from loop.selectors import evaluation_comparison
from telemetry import selectors
from telemetry.admin import InferenceLogAdmin, ReadOnlyAdmin
from telemetry.models import InferenceLog

SCORE_RANGES = {"low": {"score__lt": 0.5}, "high": {"score__gte": 0.5}, "any": {}}


def same_calls(request: HttpRequest) -> dict[str, str]:
    """The list's program and version filters, applied to the feedback too (it carries its call's).

    Redundant for the answer, not for the plan: "SimplePredict calls with a correction" probes the
    log for that program's corrections only, not for every correction and then drops the others'.
    """
    return {name: request.GET[name] for name in ("program", "version") if request.GET.get(name)}


class FeedbackScoreFilter(admin.SimpleListFilter):
    title = "feedback score"
    parameter_name = "feedback_score"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("any", "has a score"),
            ("low", "below 0.5"),
            ("high", "0.5 and above"),
            ("none", "no feedback"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return queryset
        if value == "none":
            return queryset.exclude(request_id__in=Feedback.objects.values("request_id"))
        scored = Feedback.objects.filter(
            score__isnull=False, **SCORE_RANGES.get(value, {}), **same_calls(request)
        )
        return queryset.filter(request_id__in=scored.values("request_id"))


class CorrectionFilter(admin.SimpleListFilter):
    title = "has a correction"
    parameter_name = "corrected"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("1", "yes"), ("0", "no")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        corrected = Feedback.objects.filter(correction__isnull=False).values("request_id")
        if self.value() == "1":
            return queryset.filter(request_id__in=corrected.filter(**same_calls(request)))
        if self.value() == "0":
            return queryset.exclude(request_id__in=corrected)
        return queryset


@admin.action(description="Add the selected calls to a dataset")
def add_to_dataset(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Into the dataset named by ``?dataset=`` (the list's filter), else one named after the program."""
    rows = list(queryset.order_by("created_at", "id"))
    programs = {row.program for row in rows}
    if len(programs) != 1:
        modeladmin.message_user(request, "Select calls of one program (filter by program).", messages.ERROR)
        return
    [program] = programs
    name = request.GET.get("dataset") or f"{program}-admin"
    dataset, _ = Dataset.objects.get_or_create(name=name, defaults={"program": program})
    if dataset.program != program:
        modeladmin.message_user(request, f"Dataset {name} is for {dataset.program}.", messages.ERROR)
        return
    added, skipped = datasets.items_from_calls(dataset, [row.request_id for row in rows])
    note = f" ({len(skipped)} without captured inputs skipped)" if skipped else ""
    modeladmin.message_user(request, f"Added {added} calls to dataset {name}{note}.", messages.SUCCESS)


class LoopInferenceLogAdmin(InferenceLogAdmin):
    list_display = ("call_link", *InferenceLogAdmin.list_display)
    list_filter = (*InferenceLogAdmin.list_filter, FeedbackScoreFilter, CorrectionFilter)
    actions = (add_to_dataset,)

    def read_plans(self, request: HttpRequest) -> list[AbstractContextManager]:
        """Filtered to calls with feedback: the count probes from the feedback side (below)."""
        plans = super().read_plans(request)
        if request.GET.get("feedback_score") in ("any", "low", "high") or request.GET.get("corrected") == "1":
            plans.append(feedback_join_plan())
        return plans

    @admin.display(description="call")
    def call_link(self, row: InferenceLog) -> str:
        return format_html('<a href="{}">open</a>', reverse("loop-call", args=[row.request_id]))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@contextmanager
def feedback_join_plan() -> Iterator[None]:
    """The capped count of "calls with feedback" as a probe of the log's request id index per
    feedback row, not a hash of the whole log's request ids.

    PostgreSQL prices the two alike for 10,001 matches (``LogPaginator``'s cap), but the hash join
    reads the request id index of every log row: 350 ms at 10 million rows where the probes take
    about 200 (docs/TELEMETRY.md, "Filters at 10 million rows"). Hash joins off for this
    transaction only; the page itself walks the created_at index either way.
    """
    with selectors.planner_off("enable_hashjoin"):
        yield


admin.site.unregister(InferenceLog)
admin.site.register(InferenceLog, LoopInferenceLogAdmin)


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ("updated_at", "program", "version", "name", "score", "value", "author", "request_id")
    list_filter = ("program", "name")
    search_fields = ("=request_id",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(CallTrace)
class CallTraceAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "program", "version", "request_id")
    search_fields = ("=request_id",)


class DatasetItemInline(admin.TabularInline):
    model = DatasetItem
    extra = 0
    fields = ("inputs", "labels", "request_id")


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "program", "created_at")
    inlines = (DatasetItemInline,)


@admin.action(description="Compare the two selected evaluations (same dataset), changed items first")
def compare(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    runs = list(queryset.select_related("dataset").order_by("pk"))
    if len(runs) != 2 or runs[0].dataset_id != runs[1].dataset_id:
        modeladmin.message_user(request, "Select two evaluations of one dataset.", messages.ERROR)
        return None
    left, right = runs
    rows = evaluation_comparison(left, right)
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Compare evaluations",
        "left": left,
        "right": right,
        "rows": rows,
        "changed": sum(row["changed"] for row in rows),
    }
    return TemplateResponse(request, "admin/loop/compare.html", context)


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ("pk", "created_at", "program", "version", "dataset", "metric", "field", "status", "score")
    list_filter = ("program", "status")
    actions = (compare,)


@admin.register(Optimization)
class OptimizationAdmin(ReadOnlyAdmin):
    list_display = ("pk", "created_at", "program", "from_version", "dataset", "optimizer", "status", "score",
                    "version")  # fmt: skip
    list_filter = ("program", "status", "optimizer")
