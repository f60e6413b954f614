"""Errors the services raise and the adapters map to responses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of the input."""

    field: str
    message: str
    index: int | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out


class DomainError(Exception):
    """Base class: a use case refused the request; nothing was changed."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class InvalidInput(DomainError):
    """The input breaks the contract; `details` names every bad field."""

    message: str
    details: list[FieldError] = field(default_factory=list)
    code = "invalid_input"

    def __post_init__(self) -> None:
        super().__init__(self.message)


class NotFound(DomainError):
    """The thing does not exist, or the caller may not know that it does."""

    code = "not_found"


class Conflict(DomainError):
    """The state changed under the caller (a stale lease, a run already going)."""

    code = "conflict"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    code = "forbidden"


class Unavailable(DomainError):
    """The thing cannot be done yet (no champion model, queue full)."""

    code = "unavailable"
