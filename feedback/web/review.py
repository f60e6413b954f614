"""The labeling page: the leased item, answer by key press, the next item follows."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from feedback.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from feedback.services import projects, queue
from feedback.web.context import db, login_required, session_principal, settings

bp = Blueprint("review", __name__)


@bp.get("/projects/<slug>/label")
@login_required
def label(slug: str) -> str:
    """Show the item this labeler holds, or a button to take the next one."""
    principal = session_principal()
    assert principal is not None
    try:
        claim = queue.current_claim(db(), principal, slug)
        detail = projects.project_detail(db(), principal, slug)
    except (NotFound, Forbidden):
        abort(404)
    return render_template(
        "review/item.html",
        claim=claim,
        project=detail.project,
        summary=detail.summary,
        keys=label_keys(detail.project.labels),
    )


def label_keys(labels: list[str]) -> list[tuple[str, str]]:
    """Pair each label with its key: the label itself if one character, else 1-9 then 0."""
    if all(len(label) == 1 and label not in "su?" for label in labels):
        return [(label, label) for label in labels]
    keys = [str(i) for i in range(1, 10)] + ["0"]
    return [(label, keys[i] if i < len(keys) else "") for i, label in enumerate(labels)]


@bp.post("/projects/<slug>/label/claim")
@login_required
def claim(slug: str) -> Response:
    """Lease the next most useful item and show it."""
    _claim_next(slug)
    return redirect(url_for("review.label", slug=slug))


@bp.post("/projects/<slug>/items/<int:item_id>/vote")
@login_required
def vote(slug: str, item_id: int) -> Response:
    """Record the answer under the lease's fence, then lease the next item."""
    principal = session_principal()
    assert principal is not None
    try:
        queue.cast_vote(
            db(),
            principal,
            item_id,
            request.form.get("label", ""),
            _int(request.form.get("fence")),
            _seconds(request.form.get("seconds")),
        )
    except (Conflict, InvalidInput) as error:
        flash(error.message)
        return redirect(url_for("review.label", slug=slug))
    except NotFound:
        abort(404)
    _claim_next(slug)
    return redirect(url_for("review.label", slug=slug))


@bp.post("/projects/<slug>/items/<int:item_id>/skip")
@login_required
def skip(slug: str, item_id: int) -> Response:
    """Give the item back to the pool for others, then lease the next one."""
    principal = session_principal()
    assert principal is not None
    try:
        queue.release(db(), principal, item_id, _int(request.form.get("fence")))
    except Conflict as error:
        flash(error.message)
    except NotFound:
        abort(404)
    _claim_next(slug)
    return redirect(url_for("review.label", slug=slug))


def _claim_next(slug: str) -> None:
    principal = session_principal()
    assert principal is not None
    try:
        if queue.claim_next(db(), principal, slug, settings().lease_seconds) is None:
            flash("The queue is empty for you right now.")
    except (NotFound, Forbidden):
        abort(404)


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return -1


def _seconds(value: str | None) -> float:
    try:
        return min(max(float(value or 0), 0.0), 86_400.0)
    except ValueError:
        return 0.0
