"""Django's ASGI handler, without the per-request thread starts, hops and extra task.

Django 5.2 sends ``request_started`` with ``asend`` (its sync receivers run through
``sync_to_async``) and closes every response with ``sync_to_async(response.close)``. Inside the
per-request ``ThreadSensitiveContext`` the first such call creates a one-thread executor, and the
context's exit starts another thread to join it: two thread starts and two hops per request, for
receivers (``close_old_connections``, ``reset_queries``) that have nothing to do when the request
ran no thread-sensitive code. Measured on the API path they were the largest server cost.

Here, when a request ran no thread-sensitive code, those receivers run inline on the event loop
(where no database connection exists). When it did (the admin, ORM calls through
``sync_to_async``), Django's behaviour is kept so connections opened in that thread are closed.
The response is computed in the request's own task rather than a second one (see
``_respond_unless_disconnected``). Browser paths use Django's handler unchanged.
"""

import asyncio
import contextlib

from asgiref.sync import SyncToAsync, sync_to_async
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

from dspysite.middleware import is_browser_path


def ran_thread_sensitive_code() -> bool:
    """Whether this request's ThreadSensitiveContext has created its worker thread."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    return context is not None and context in SyncToAsync.context_to_thread_executor


class ServiceASGIHandler(ASGIHandler):
    async def handle(self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:  # type: ignore[override]
        if is_browser_path(scope.get("path", "")):
            await super().handle(scope, receive, send)
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await self._close(error_response)
            return
        response = await self._respond_unless_disconnected(request, receive, send)
        if response is None:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            await self._close(response)
        body_file.close()

    async def _respond_unless_disconnected(
        self, request: HttpRequest, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> HttpResponseBase | None:
        """Django's race between the response and a client disconnect, in this task.

        Django computes the response in a second task and waits for whichever of the two
        finishes first. Starting that task costs an event-loop round before the request is even
        routed, and under load a round waits behind every other request's ready callbacks (about
        20 ms at p50 with 200 requests in flight). Here the response is computed in the request's
        own task, and the disconnect listener cancels this task when the client goes away, as
        ``asyncio.timeout`` does: the cancellation is told apart from any other by
        ``client_left``, and taken back with ``uncancel``. Returns None when the client left first.
        """
        task = asyncio.current_task()
        assert task is not None
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        client_left = settled = False

        def on_listener_done(done: asyncio.Task) -> None:
            nonlocal client_left
            # A callback runs a loop round after the listener finished: when the client left as
            # the response was ready, this task may have settled (and moved on) in between.
            if not settled and not done.cancelled():  # RequestAborted (or an invalid message)
                client_left = True
                task.cancel()

        listener.add_done_callback(on_listener_done)
        try:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # client left while it was being sent
                await self.send_response(response, send)
        except asyncio.CancelledError:
            if not client_left:
                raise
            response = None
        finally:
            settled = True  # before any further await: no cancellation is requested after this
            if client_left:
                task.uncancel()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                await listener
        return response

    async def _close(self, response: HttpResponseBase) -> None:
        if ran_thread_sensitive_code():
            await sync_to_async(response.close)()
        else:
            response.close()
