"""Shapes of API requests and responses (pydantic), also the source of the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class PredictInputIn(Strict):
    """One input for the champion to predict."""

    external_id: str = Field(min_length=1, max_length=200)
    input: TextInput | FeaturesInput
    display: dict[str, Any] | None = None


class ItemResult(BaseModel):
    external_id: str
    id: int
    route: Literal["review", "auto", "audit", "seed"]
    uncertainty: float
    status: str
    duplicate: bool


class PredictionsOut(BaseModel):
    items: list[ItemResult]


class VoteIn(Strict):
    label: str = Field(min_length=1, max_length=100)
    fence: int
    seconds: float = Field(default=0.0, ge=0.0, le=86_400.0)


class FenceIn(Strict):
    fence: int
