"""``make run`` (runserver) says where the admin is and how to create its first user."""

import pytest
from django.contrib.auth import get_user_model

from programs.management.commands.runserver import admin_hint


@pytest.mark.django_db
def test_without_a_superuser_it_says_how_to_create_one() -> None:
    hint = admin_hint("127.0.0.1", 8000)
    create = "`python manage.py createsuperuser`"
    assert hint == f"Admin: http://127.0.0.1:8000/admin/ (no user yet: create one with {create})"
    get_user_model().objects.create_superuser("admin", "admin@example.org", "secret-password")
    assert admin_hint("::1", 8001) == "Admin: http://[::1]:8001/admin/"
