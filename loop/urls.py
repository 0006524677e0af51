from django.urls import path

from loop import views

urlpatterns = [
    path("ui/calls/<str:request_id>", views.call_page, name="loop-call"),
]
