"""API keys in the Django admin: create (the key is shown once, on the page that follows), revoke."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from apikeys.models import ApiKey
from apikeys.services import api_key_issue, api_key_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "display_prefix",
        "key_status",
        "created_at",
        "expires_at",
        "revoked_at",
        "created_by",
    )
    list_filter = ("revoked_at", "expires_at")
    search_fields = ("name", "prefix")
    readonly_fields = ("display_prefix", "key_status", "created_at", "created_by", "revoked_at")
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return ["name", "expires_at"]
        return [
            "name",
            "display_prefix",
            "key_status",
            "expires_at",
            "created_at",
            "created_by",
            "revoked_at",
        ]

    @admin.display(description="key")
    def display_prefix(self, obj: ApiKey) -> str:
        return obj.display_prefix

    @admin.display(description="status")
    def key_status(self, obj: ApiKey) -> str:
        return obj.status()

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
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
