"""API keys in the Django admin: create (the key is shown once, on the page that follows), revoke,
set their scopes (``invoke,read`` by default; ``admin`` reads every key's calls and spend) and
quotas (apikeys/quotas.py; servers apply a change within the key cache's TTL) and see their spend
today and this month (telemetry's per-key daily aggregates, one query per page)."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from apikeys.models import ApiKey, normalized_scopes
from apikeys.services import api_key_issue, api_key_revoke
from telemetry.selectors import Spend, key_spend

QUOTA_FIELDS = ("rpm", "tokens_per_day", "budget_usd", "max_in_flight")


def _spend_text(spend: Spend) -> str:
    tokens = spend.prompt_tokens + spend.completion_tokens
    return f"{spend.request_count} requests, {tokens} tokens, ${spend.cost_usd:.4f}"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "display_prefix",
        "key_status",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "rpm",
        "tokens_per_day",
        "budget_usd",
        "max_in_flight",
        "spend_today",
        "spend_month",
    )
    list_filter = ("revoked_at", "expires_at")
    search_fields = ("name", "prefix")
    readonly_fields = (
        "display_prefix",
        "key_status",
        "created_at",
        "created_by",
        "revoked_at",
        "spend_today",
        "spend_month",
    )
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return ["name", "scopes", "expires_at", *QUOTA_FIELDS]
        return [
            "name",
            "display_prefix",
            "key_status",
            "scopes",
            "expires_at",
            *QUOTA_FIELDS,
            "spend_today",
            "spend_month",
            "created_at",
            "created_by",
            "revoked_at",
        ]

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The page's keys with their spend, read in one query for the whole page."""
        changelist = super().get_changelist_instance(request)
        spend = key_spend([key.id for key in changelist.result_list])
        for key in changelist.result_list:
            key._spend = spend.get(key.id, (Spend(), Spend()))
        return changelist

    @admin.display(description="today (UTC)")
    def spend_today(self, obj: ApiKey) -> str:
        return _spend_text(self._spend(obj)[0])

    @admin.display(description="this month (UTC)")
    def spend_month(self, obj: ApiKey) -> str:
        return _spend_text(self._spend(obj)[1])

    def _spend(self, obj: ApiKey) -> tuple[Spend, Spend]:
        cached = getattr(obj, "_spend", None)
        if cached is None and obj.pk is not None:
            cached = obj._spend = key_spend([obj.pk]).get(obj.pk, (Spend(), Spend()))  # type: ignore[attr-defined]
        return cached or (Spend(), Spend())

    @admin.display(description="key")
    def display_prefix(self, obj: ApiKey) -> str:
        return obj.display_prefix

    @admin.display(description="status")
    def key_status(self, obj: ApiKey) -> str:
        return obj.status()

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        obj.scopes = normalized_scopes(obj.scopes)
        if not change:
            request._new_api_key = api_key_issue(obj)  # type: ignore[attr-defined]
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Show the new key, once: only its hash is stored, nobody can see it again."""
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.model._meta,
            "key": obj,
            "token": request._new_api_key,  # type: ignore[attr-defined]
        }
        response = TemplateResponse(request, "admin/apikeys/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = api_key_revoke(queryset)
        self.message_user(
            request, f"Revoked {count} key(s); servers refuse them within seconds.", messages.SUCCESS
        )
