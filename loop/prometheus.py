"""The loop's Prometheus series, in the registry ``/metrics`` exposes (multiprocess like telemetry's).

``dspy_feedback_total{program, name, outcome}`` counts feedback given (``created``) and changed
(``updated``); ``dspy_feedback_score{program, name}`` is a histogram of the scores sent, so
``rate(_sum) / rate(_count)`` is the mean score given over a window.
"""

from prometheus_client import Counter, Histogram

from loop.models import Feedback

FEEDBACK = Counter("dspy_feedback", "Feedback given on program calls", ["program", "name", "outcome"])
FEEDBACK_SCORE = Histogram(
    "dspy_feedback_score",
    "Scores given as feedback (0 to 1)",
    ["program", "name"],
    buckets=(0.0, 0.25, 0.5, 0.75, 1.0),
)


def observe_feedback(feedback: Feedback, created: bool) -> None:
    FEEDBACK.labels(feedback.program, feedback.name, "created" if created else "updated").inc()
    if feedback.score is not None:
        FEEDBACK_SCORE.labels(feedback.program, feedback.name).observe(feedback.score)
