"""The loop routes' request and response bodies, as the OpenAPI document states them."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loop.models import THUMBS
from telemetry.responses import Tokens

NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
# exact_match, f1, llm_judge, or package.module:function (loop.metrics)
METRIC_PATTERN = r"^(exact_match|f1|llm_judge|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$"
OPTIMIZER_PATTERN = r"^(BootstrapFewShot|MIPROv2|GEPA|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$"


class LMCallTrace(BaseModel):
    """One LM call of a captured call: what ``dspy.inspect_history()`` shows for it."""

    messages: list[Any] = Field(description="the rendered prompt as sent; images as references")
    completion: Any = Field(description="the raw completion text (a list when the call asked for n > 1)")
    usage: Tokens
    cost_usd: float | None
    duration_ms: float | None
    model: str
    model_alias: str = ""
    error: str | None = None
    cache_hit: bool = False
    truncated: bool = Field(
        description=f"a string was cut (marked in its text: {'…[truncated N characters]'!r})"
    )


class FeedbackEntry(BaseModel):
    name: str
    score: float | None
    value: str | None
    comment: str
    correction: dict[str, Any] | None
    author: str = Field(description='"key <id>", "user <name>" (a staff session), "" (keys off)')
    created_at: str
    updated_at: str


class CallDetail(BaseModel):
    request_id: str
    version: str = Field(description='the program version that answered ("": unversioned)')
    program: str
    status: int
    success: bool
    created_at: str
    duration_ms: float | None
    source: str
    inputs: Any
    outputs: Any
    error: str | None
    error_type: str | None
    tokens: Tokens
    cost_usd: float | None
    api_key: str | None
    traced: bool = Field(
        description="false: the program's calls are not captured (capture_io), or not yet written"
    )
    lm_calls: list[LMCallTrace]
    feedback: list[FeedbackEntry]


class FeedbackIn(BaseModel):
    """A judgement of a call: a score, a label, a comment and/or the outputs it should have given."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["score"], "properties": {"score": {"type": "number"}}},
                {"required": ["value"], "properties": {"value": {"type": "string"}}},
                {"required": ["comment"], "properties": {"comment": {"minLength": 1}}},
                {"required": ["correction"], "properties": {"correction": {"type": "object"}}},
            ]
        },
    )

    request_id: str = Field(min_length=1, max_length=128)
    name: str = Field(THUMBS, pattern=NAME_PATTERN, description='"thumbs", or any metric name')
    score: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    value: str | None = Field(
        None, min_length=1, max_length=200, description="a label, instead of or with a score"
    )
    comment: str = Field("", max_length=10_000)
    correction: dict[str, Any] | None = Field(
        None, description="the output fields the call should have answered (labels in datasets)"
    )

    @model_validator(mode="after")
    def _says_something(self) -> "FeedbackIn":
        if self.score is None and self.value is None and self.correction is None and not self.comment:
            raise ValueError("give a score, a value, a comment or a correction")
        return self


class FeedbackOut(BaseModel):
    request_id: str
    created: bool
    feedback: FeedbackEntry


class DatasetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    program: str = Field(min_length=1, max_length=200)


class DatasetOut(BaseModel):
    name: str
    program: str
    items: int
    created_at: str


class DatasetListing(BaseModel):
    datasets: list[DatasetOut]


class Example(BaseModel):
    inputs: dict[str, Any] = Field(min_length=1)
    labels: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = None
    feedback: dict[str, Any] = Field(default_factory=dict)


class ItemsIn(BaseModel):
    """Either the calls to add (their inputs; labels: the correction, else the outputs) or examples."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["request_ids"], "properties": {"request_ids": {"type": "array"}}},
                {"required": ["examples"], "properties": {"examples": {"type": "array"}}},
            ]
        },
    )

    request_ids: list[str] | None = Field(None, min_length=1, max_length=10_000)
    examples: list[Example] | None = Field(None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one_of(self) -> "ItemsIn":
        if (self.request_ids is None) == (self.examples is None):
            raise ValueError("give either `request_ids` or `examples`")
        return self


class ItemsOut(BaseModel):
    dataset: str
    added: int
    skipped: list[str] = Field(
        description="request ids not added: unknown, another program's, or without captured inputs"
    )
    items: int


class ImportOut(BaseModel):
    dataset: str
    added: int
    items: int


class EvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: str = Field(min_length=1, max_length=200)
    version: str = Field("", max_length=100, description='"": the default version (production)')
    dataset: str = Field(min_length=1, max_length=200)
    metric: str = Field(
        pattern=METRIC_PATTERN, description='"exact_match", "f1", "llm_judge" or "package.module:function"'
    )
    field: str = Field("", max_length=200, description="the output field scored (all labels if empty)")
    judge: str = Field("", max_length=200, description="llm_judge: the program that judges")


class Accepted(BaseModel):
    id: int


class Progress(BaseModel):
    done: int
    total: int


class EvaluationItemOut(BaseModel):
    inputs: dict[str, Any]
    labels: dict[str, Any]
    outputs: dict[str, Any] | None
    score: float
    request_id: str
    error: str


class EvaluationOut(BaseModel):
    id: int
    program: str
    version: str
    dataset: str
    metric: str
    field: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: Progress
    score: float | None = Field(description="the mean over every item (a failed call scores 0)")
    error: str
    items: list[EvaluationItemOut]


class OptimizationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: str = Field(min_length=1, max_length=200)
    from_version: str = Field(
        "", max_length=100, description='the version (v3) or alias it starts from; "": production'
    )
    dataset: str = Field(min_length=1, max_length=200)
    valset: str = Field("", max_length=200, description="a dataset to score on (default: the trainset)")
    metric: str = Field(pattern=METRIC_PATTERN)
    field: str = Field("", max_length=200)
    optimizer: str = Field(
        pattern=OPTIMIZER_PATTERN,
        description='"BootstrapFewShot", "MIPROv2", "GEPA" or "package.module:function"',
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the optimizer's keyword arguments")


class OptimizationOut(BaseModel):
    id: int
    program: str
    from_version: str
    dataset: str
    valset: str | None
    metric: str
    optimizer: str
    params: dict[str, Any]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: dict[str, Any] = Field(
        description='{"stage": started | compiling | compiled | validated | registering | registered, '
        '"trials": the optimizer\'s metric calls so far, "stages": [{"stage", "at"}, ...] in order}'
    )
    version: str = Field(description='the version registered from it ("v5"; "" until registered)')
    score: float | None
    state: dict[str, Any] | None = Field(description="the compiled program's module.dump_state()")
    request_id: str = Field(description="the logged call (source optimize) carrying the run's LM calls")
    error: str


class ComparedItem(BaseModel):
    inputs: dict[str, Any]
    labels: dict[str, Any]
    a_outputs: dict[str, Any] | None
    a_score: float | None
    b_outputs: dict[str, Any] | None
    b_score: float | None
    changed: bool = Field(description="the score or the outputs differ")


class Compared(BaseModel):
    a: int
    b: int
    a_version: str
    b_version: str
    a_score: float | None
    b_score: float | None
    dataset: str
    changed: int
    items: list[ComparedItem] = Field(description="the changed items first, then dataset order")
