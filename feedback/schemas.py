"""Shapes of API requests and responses (pydantic), also the source of the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Route = Literal["review", "auto", "audit", "seed"]
QueuePolicy = Literal["reject", "defer"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextInput(Strict):
    text: str = Field(min_length=1, max_length=100_000)


class FeaturesInput(Strict):
    features: dict[str, float] | list[float]


class PredictionIn(Strict):
    """One prediction a model service is unsure about."""

    external_id: str = Field(min_length=1, max_length=200)
    input: TextInput | FeaturesInput
    probabilities: dict[str, float]
    model_version: str | None = Field(default=None, max_length=100)
    display: dict[str, Any] | None = None


class PredictionsIn(Strict):
    """A batch of predictions; all are stored or none."""

    items: list[PredictionIn] = Field(min_length=1)


class PredictInputIn(Strict):
    """One input for the champion to predict."""

    external_id: str = Field(min_length=1, max_length=200)
    input: TextInput | FeaturesInput
    display: dict[str, Any] | None = None


class PredictIn(Strict):
    """A batch of inputs for the champion; all are stored or none."""

    items: list[PredictInputIn] = Field(min_length=1)


class ItemResult(BaseModel):
    """What happened to one posted prediction."""

    external_id: str
    id: int
    route: Route
    uncertainty: float
    status: str
    duplicate: bool
    deferred: bool = Field(
        default=False, description="queued as auto because the review queue was full"
    )


class PredictionsOut(BaseModel):
    """The outcome of each item, in request order."""

    items: list[ItemResult]
    deferred: int = Field(default=0, description="how many review items the full queue deferred")
    queue_full: QueuePolicy = Field(
        default="reject", description="what the project does with review items when full"
    )


class PredictedItem(ItemResult):
    """A champion prediction and what happened to its item."""

    label: str
    probabilities: dict[str, float]


class PredictOut(BaseModel):
    model_version: int
    items: list[PredictedItem]
    deferred: int = 0
    queue_full: QueuePolicy = "reject"


class ModelOut(BaseModel):
    """The champion model: where it came from and how it scored on the holdout."""

    model_config = ConfigDict(extra="allow")

    version: int
    created_at: str
    metrics: dict[str, Any]
    baseline_metrics: dict[str, Any]
    train_size: int
    holdout_size: int
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    library_versions: dict[str, Any]


class LabelOut(BaseModel):
    """One decided label; `cursor` resumes the export right after it."""

    cursor: str
    item_id: int
    external_id: str
    label: str
    source: str
    holdout: bool
    input: dict[str, Any]
    decided_at: str
    previous_label: str | None = None
    corrected_at: str | None = None


class LabelsOut(BaseModel):
    items: list[LabelOut]
    next_cursor: str | None = Field(description="pass as `after` to continue; null when empty")
    has_more: bool


class ErrorDetail(BaseModel):
    field: str
    message: str
    index: int | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None
    retry_after: int | None = None
    queue_full: QueuePolicy | None = None


class ErrorOut(BaseModel):
    """Every error: a machine-readable code, a message, and the bad fields."""

    error: ErrorBody


class RetrainOut(BaseModel):
    run: int


class StageOut(BaseModel):
    """One stage of a retrain run and how long it took."""

    name: Literal["snapshot", "fit", "evaluate", "decide", "rescore"]
    state: Literal["pending", "running", "done", "failed", "skipped"]
    seconds: float | None


class RunOut(BaseModel):
    """A retrain run: status, progress by stage, timings and decision (in `report`)."""

    id: int
    status: str
    stage: str | None
    trigger: str
    attempts: int
    error: str | None
    model_version_id: int | None
    model_version: int | None = Field(description="the version the run made, once it has one")
    requested_at: str | None
    started_at: str | None
    finished_at: str | None
    active: bool = Field(description="still running, or re-scoring the queue after promotion")
    stages: list[StageOut]
    report: dict[str, Any] = Field(
        description="decision, reasons, metrics, timings and the training-data summary"
    )


class ModelVersionOut(BaseModel):
    """One model version: how it was trained, how it scored, and what was decided."""

    version: int
    created_at: str
    spec: str
    metrics: dict[str, Any]
    per_class: dict[str, Any]
    baseline_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None = Field(
        description="the champion's scores on the same holdout in the same run"
    )
    decision: str = Field(description="promoted or rejected")
    reason: str
    train_size: int
    holdout_size: int
    watermark: int = Field(description="the newest decision id the training set includes")
    snapshot_digest: str = Field(description="sha256 of the exact training examples")
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    library_versions: dict[str, Any]
    timings: dict[str, Any]
    routing: dict[str, Any] | None
    incremental: bool
    champion: bool = Field(description="this version is serving now")


class ModelsOut(BaseModel):
    """Every model version, newest first."""

    items: list[ModelVersionOut]


class VersionRunOut(BaseModel):
    id: int
    trigger: str
    report: dict[str, Any]


class VersionDetailOut(ModelVersionOut):
    """One version with its lineage: its parent and the run (and report) that made it."""

    parent_version: int | None
    run: VersionRunOut | None


class VersionBrief(BaseModel):
    version: int | None
    watermark: int
    snapshot_digest: str | None = None
    train_size: int | None = None
    decision: str | None = None


class NewLabelsOut(BaseModel):
    training: int
    holdout: int
    excluded: int = Field(description="labels of classes the project no longer has")
    by_label: dict[str, int]


class CorrectionOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_label: str | None = Field(alias="from")
    to: str
    count: int


class CorrectionsOut(BaseModel):
    total: int
    changes: list[CorrectionOut]


class VersionBetween(VersionBrief):
    reason: str
    metrics: dict[str, Any]
    incremental: bool


class ChangesOut(BaseModel):
    """What changed between two versions (or since one, up to the newest decision)."""

    since: VersionBrief
    until: VersionBrief
    new_labels: NewLabelsOut
    corrections: CorrectionsOut
    versions: list[VersionBetween]
    train_size_change: int | None
    metrics_change: dict[str, float] | None
    same_training_data: bool | None


class ChampionIn(Strict):
    """Point the champion at an earlier version (a rollback)."""

    version: int = Field(ge=1, le=2**31 - 1)


class RollbackOut(BaseModel):
    """What a rollback did: the champion before and after, and the routing now in force."""

    previous: int | None
    current: int
    routing: dict[str, Any]
    changed: bool


class MeOut(BaseModel):
    """Who a token speaks for: a service token names its one project."""

    role: str
    project: str | None
    email: str | None


class HealthOut(BaseModel):
    status: Literal["ok"]


class WebhookEvent(BaseModel):
    """The JSON body POSTed to a project's webhook, signed in `X-Feedback-Signature`."""

    id: str
    type: Literal["label_decided", "promoted"]
    created_at: str
    project: str
    data: dict[str, Any]


class LeaseOut(BaseModel):
    """A lease: the item is the caller's until `expires_at`; votes must carry `fence`."""

    expires_at: str
    fence: int


class ClaimedItem(BaseModel):
    id: int
    input: dict[str, Any]
    display: dict[str, Any] | None
    prediction: dict[str, Any] | None
    lease: LeaseOut


class ClaimOut(BaseModel):
    """The next item, leased to the calling labeler."""

    item: ClaimedItem


class VoteOut(BaseModel):
    item_id: int
    outcome: str = Field(description="what the vote did to the item (decided, needs more votes, …)")
    label: str | None


class ReleaseOut(BaseModel):
    released: int


class VoteIn(Strict):
    label: str = Field(min_length=1, max_length=100)
    fence: int
    seconds: float = Field(default=0.0, ge=0.0, le=86_400.0)


class FenceIn(Strict):
    fence: int
