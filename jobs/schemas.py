"""The jobs API's bodies, as the OpenAPI document states them."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "completed", "failed", "cancelling", "cancelled"]


class JobRequest(BaseModel):
    """``POST /api/jobs`` as JSON: the inputs are at ``inputs_url`` (JSONL, fetched by the server)."""

    model_config = ConfigDict(extra="forbid")
    program: str
    version: str = Field("", description="the program version to run ('' or absent: production)")
    inputs_url: str = Field(description='JSONL, one {"custom_id": "...", "inputs": {...}} per line')


class JobAccepted(BaseModel):
    id: str
    status: Status
    total: int


class JobView(BaseModel):
    id: str
    program: str
    version: str
    status: Status
    total: int
    succeeded: int
    failed: int
    progress: float = Field(description="finished items / total, 0 to 1")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tokens: int
    cost_usd: float
    error: str = ""


class JobListing(BaseModel):
    jobs: list[JobView]


class ResultLine(BaseModel):
    """One line of ``GET /api/jobs/{id}/results`` (JSONL)."""

    custom_id: str | None
    status: int = Field(description="what a single call would have answered (200, 4xx, 5xx)")
    outputs: dict | None = None
    error: dict | None = Field(None, description="error, error_type, errors (validation)")
    request_id: str


class RunAccepted(BaseModel):
    run_id: str


class RunView(BaseModel):
    """``GET /api/runs/{id}``, and the webhook's body once the run finished."""

    run_id: str
    program: str
    status: Literal["queued", "running", "succeeded", "failed"]
    status_code: int | None = Field(None, description="what a single call would have answered")
    outputs: dict | None = None
    error: dict | None = None
    request_id: str | None = None
