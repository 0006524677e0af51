"""What an optimization run shows while it runs, and where a cancel stops it.

The optimizer's own trials are the metric calls it makes while compiling (BootstrapFewShot: one per
example it tries to bootstrap; MIPROv2 and GEPA: one per scored example of each candidate): each is
counted, the count written to the run's ``progress`` at most every :data:`WRITE_EVERY_S`, and each
is the point where a cancel is seen. Only the run's own thread touches the database (an optimizer
may score on threads of its own, which would each leave a connection behind): the others count and
read the flag the run's thread last saw.
"""

import threading
import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from loop.models import Optimization, RunStatus

WRITE_EVERY_S = 0.5


class Cancelled(BaseException):
    """Raised inside the optimizer once the run is cancelled. A ``BaseException``: optimizers catch
    ``Exception`` around each trial (BootstrapFewShot counts a failed example and goes on)."""


class AlreadyRegistering(Exception):
    """A cancel that arrives too late: the run is registering its version, or has finished."""


class RunWatch:
    """One run's progress (stage, trials) in its row, and its cancel flag."""

    def __init__(self, optimization_id: int) -> None:
        self.id = optimization_id
        self.owner = threading.get_ident()
        self.trials = 0
        self.stages: list[dict[str, str]] = []  # a list: a JSONB object does not keep its keys' order
        self.stage_name = ""
        self.cancelled = False
        self.written = 0.0
        self.request_id = ""  # the logged call of the run's LM calls, once it has started

    def stage(self, name: str) -> None:
        """The run reached ``name`` (started, compiling, compiled, validated, registering, registered)."""
        self.stage_name = name
        self.stages.append({"stage": name, "at": timezone.now().isoformat()})
        self._write()

    def trial(self) -> None:
        """One metric call of the optimizer: counted, and where a cancel stops the run."""
        self.trials += 1
        if threading.get_ident() == self.owner and time.monotonic() - self.written >= WRITE_EVERY_S:
            self._write()
        self.check()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the run was cancelled (its row, read on the run's thread)."""
        if threading.get_ident() == self.owner and not self.cancelled:
            self.cancelled = Optimization.objects.filter(pk=self.id, cancel_requested=True).exists()
        if self.cancelled:
            raise Cancelled

    def claim_registration(self) -> None:
        """The last point a cancel stops the run: after it, the version is registered.

        Under the row's lock, as :func:`cancel` is: a cancel either lands before (and the run stops
        here) or sees ``registering`` (and answers 409)."""
        with transaction.atomic():
            row = Optimization.objects.select_for_update().get(pk=self.id)
            if row.cancel_requested:
                self.cancelled = True
                raise Cancelled
            self.stage_name = "registering"
            self.stages.append({"stage": "registering", "at": timezone.now().isoformat()})
            Optimization.objects.filter(pk=self.id).update(progress=self.progress())

    def progress(self) -> dict[str, Any]:
        return {"stage": self.stage_name, "trials": self.trials, "stages": list(self.stages)}

    def _write(self) -> None:
        self.written = time.monotonic()
        Optimization.objects.filter(pk=self.id).update(progress=self.progress())


def cancel(optimization_id: int) -> Optimization:
    """Ask a run to stop (it stops at its next trial, or before registering).

    Raises :class:`Optimization.DoesNotExist` or :class:`AlreadyRegistering`."""
    with transaction.atomic():
        row = Optimization.objects.select_for_update().get(pk=optimization_id)
        stage = row.progress.get("stage")
        if row.status not in (RunStatus.QUEUED, RunStatus.RUNNING) or stage in ("registering", "registered"):
            where = stage if row.status == RunStatus.RUNNING else row.status
            raise AlreadyRegistering(f"optimization {optimization_id} is {where}: too late to cancel")
        row.cancel_requested = True
        row.save(update_fields=["cancel_requested"])
    return row
