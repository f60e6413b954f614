"""How a project trains: its model spec, the extra types its loader trusts, incremental mode."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from feedback.db.engine import Database
from feedback.db.models import AuditEvent, Project
from feedback.domain import incremental, pipelines
from feedback.domain.errors import FieldError, Forbidden, InvalidInput
from feedback.services.projects import visible_project
from feedback.services.users import Principal

TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
MAX_TRUSTED_TYPES = 50


@dataclass(frozen=True)
class TrainingChange:
    """The settings to change; None leaves a setting as it is."""

    model_spec: str | None = None
    trusted_types: list[str] | None = None
    incremental: bool | None = None
    full_refit_every: int | None = None


def configure_training(
    db: Database, principal: Principal, slug: str, change: TrainingChange
) -> dict[str, Any]:
    """Change how a project trains (admins only); audited. Return the settings now in force.

    The model spec is built once here, so a factory that cannot be imported, or that does
    not return a probabilistic classifier, is refused before any run tries it.

    Raises:
        Forbidden: the caller is not an admin.
        InvalidInput: a setting is not valid (each one named); nothing changes.
    """
    if not principal.is_admin:
        raise Forbidden("only admins may change how a project trains")
    with db.transaction() as session:
        project = visible_project(session, principal, slug)
        before = _settings(project)
        wanted = {**before, **{k: v for k, v in change.__dict__.items() if v is not None}}
        problems = _problems(wanted, project.input_kind)
        if problems:
            raise InvalidInput("the training settings are not valid", problems)
        for name, value in wanted.items():
            setattr(project, name, value)
        detail = {"before": before, "after": wanted}
        session.add(
            AuditEvent(
                actor_id=principal.user_id, project_id=project.id, action="training", detail=detail
            )
        )
        return wanted


def _settings(project: Project) -> dict[str, Any]:
    return {
        "model_spec": project.model_spec,
        "trusted_types": list(project.trusted_types or []),
        "incremental": project.incremental,
        "full_refit_every": project.full_refit_every,
    }


def _problems(wanted: dict[str, Any], input_kind: str) -> list[FieldError]:
    problems = [
        FieldError("trusted_types", f"'{name}' is not a dotted type name")
        for name in wanted["trusted_types"]
        if not isinstance(name, str) or not TYPE_NAME.match(name)
    ]
    if len(wanted["trusted_types"]) > MAX_TRUSTED_TYPES:
        problems.append(FieldError("trusted_types", f"at most {MAX_TRUSTED_TYPES} types"))
    if wanted["full_refit_every"] < 1:
        problems.append(FieldError("full_refit_every", "must be at least 1"))
    try:
        pipeline = pipelines.build_pipeline(wanted["model_spec"], input_kind)
    except InvalidInput as error:
        return problems + error.details
    if wanted["incremental"] and not incremental.supports_partial_fit(pipeline):
        problems.append(
            FieldError(
                "incremental",
                f"'{wanted['model_spec']}' cannot learn incrementally (no partial_fit); "
                "use text-sgd, features-sgd or a factory whose last step has partial_fit",
            )
        )
    return problems
