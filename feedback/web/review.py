"""The labeling page and the reviewers' pages (escalation queue, item history, corrections).

The labeling forms post like any form (and redirect back, so the page works without
JavaScript); `app.js` posts them with fetch instead and swaps in the page it gets back, so
an answer and the next item take one round trip. Such requests carry `X-Requested-With:
fetch` and get the page itself, with the outcome in it, instead of a redirect.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from feedback.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from feedback.services import labeling, queue, review
from feedback.services.users import Principal
from feedback.web.context import db, login_required, session_principal, settings

bp = Blueprint("review", __name__)
Page = str | Response | tuple[str, int]
IMAGE_PREFIXES = ("https://", "http://", "data:image/png;base64,")


@bp.app_template_global()
def image_src(display: Any) -> str | None:
    """The item's image if it is an http(s) URL or a PNG data URI; anything else is ignored."""
    image = display.get("image") if isinstance(display, dict) else None
    if isinstance(image, str) and image.startswith(IMAGE_PREFIXES) and len(image) < 2_000_000:
        return image
    return None


def label_keys(labels: list[str]) -> list[tuple[str, str]]:
    """Pair each label with its key: the label itself if one character, else 1-9 then 0."""
    if all(len(label) == 1 and label not in "su?" for label in labels):
        return [(label, label) for label in labels]
    keys = [str(i) for i in range(1, 10)] + ["0"]
    return [(label, keys[i] if i < len(keys) else "") for i, label in enumerate(labels)]


def _principal() -> Principal:
    principal = session_principal()
    assert principal is not None
    return principal


def _page(slug: str, notice: str | None = None, status: int = 200) -> Page:
    """Render the labeling page (for fetch) or redirect to it (for a plain form post)."""
    if request.method == "POST" and request.headers.get("X-Requested-With") != "fetch":
        if notice:
            flash(notice)
        return redirect(url_for("review.label", slug=slug))
    try:
        page = labeling.labeling_page(db(), _principal(), slug)
    except (NotFound, Forbidden):
        abort(404)
    html = render_template(
        "review/item.html", page=page, keys=label_keys(page.project.labels), notice=notice
    )
    return html, status


@bp.get("/projects/<slug>/label")
@login_required
def label(slug: str) -> Page:
    """Show the item this labeler holds (a reload shows the same one), or a start button."""
    return _page(slug)


@bp.post("/projects/<slug>/label/claim")
@login_required
def claim(slug: str) -> Page:
    """Lease the next most useful item and show it."""
    return _page(slug, _claim_next(slug))


@bp.post("/projects/<slug>/items/<int:item_id>/vote")
@login_required
def vote(slug: str, item_id: int) -> Page:
    """Record the answer under the lease's fence and lease the next item, in one transaction."""
    answer = (request.form.get("label", ""), _int(request.form.get("fence")), _seconds())
    try:
        _, nxt = queue.vote_and_claim(db(), _principal(), item_id, answer, settings().lease_seconds)
    except queue.AlreadyVoted:  # a retried answer: it is saved; show the next item
        return _page(slug, _claim_next(slug))
    except (Conflict, InvalidInput) as error:
        return _page(slug, error.message, 409 if isinstance(error, Conflict) else 422)
    except (NotFound, Forbidden):
        abort(404)
    return _page(slug, None if nxt else "The queue is empty for you right now.")


@bp.post("/projects/<slug>/items/<int:item_id>/skip")
@login_required
def skip(slug: str, item_id: int) -> Page:
    """Give the item back to the pool for others, then lease the next one."""
    try:
        queue.release(db(), _principal(), item_id, _int(request.form.get("fence")))
    except Conflict as error:
        return _page(slug, error.message, 409)
    except (NotFound, Forbidden):
        abort(404)
    return _page(slug, _claim_next(slug))


def _claim_next(slug: str) -> str | None:
    try:
        found = queue.claim_next(db(), _principal(), slug, settings().lease_seconds)
    except (NotFound, Forbidden):
        abort(404)
    return None if found else "The queue is empty for you right now."


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return -1


def _seconds() -> float:
    try:
        return min(max(float(request.form.get("seconds") or 0), 0.0), 86_400.0)
    except ValueError:
        return 0.0


@bp.get("/projects/<slug>/escalations")
@login_required
def escalations(slug: str, error: str | None = None, status: int = 200) -> tuple[str, int]:
    """List escalated items (unsure answers and ties) for a reviewer to decide."""
    project, items = _or_abort(review.escalations, slug)
    html = render_template("review/escalations.html", project=project, items=items, error=error)
    return html, status


@bp.get("/projects/<slug>/items/<int:item_id>")
@login_required
def history(slug: str, item_id: int, error: str | None = None, status: int = 200) -> Page:
    """Show one item's label history (who answered what, when) and the correction form."""
    found = _or_abort(review.item_history, slug, item_id)
    return render_template("review/history.html", h=found, error=error), status


@bp.post("/projects/<slug>/items/<int:item_id>/decide")
@login_required
def decide(slug: str, item_id: int) -> Page:
    """Decide an escalated item with the reviewer's label."""
    label = request.form.get("label", "")
    problem = _reviewer_action(review.decide_escalated, slug, item_id, label)
    if problem is not None:
        return escalations(slug, *problem)
    flash(f"Item {item_id} decided: {label}.")
    return redirect(url_for("review.escalations", slug=slug))


@bp.post("/projects/<slug>/items/<int:item_id>/correct")
@login_required
def correct(slug: str, item_id: int) -> Page:
    """Correct an item's decision; the new label is what the next retrain reads."""
    label = request.form.get("label", "")
    problem = _reviewer_action(review.correct_decision, slug, item_id, label)
    if problem is not None:
        return history(slug, item_id, *problem)
    flash(f"Decision on item {item_id} is now {label}.")
    return redirect(url_for("review.history", slug=slug, item_id=item_id))


def _reviewer_action(action: Any, slug: str, item_id: int, label: str) -> tuple[str, int] | None:
    """Run a reviewer's change; return (message, status) when it was refused."""
    try:
        action(db(), _principal(), slug, item_id, label)
    except InvalidInput as error:
        return error.message + ": " + "; ".join(d.message for d in error.details), 422
    except Conflict as error:
        return error.message, 409
    except Forbidden:
        abort(403)
    except NotFound:
        abort(404)
    return None


def _or_abort(read: Any, *args: Any) -> Any:
    """Call a read service for the logged-in user; 403 or 404 when it refuses."""
    try:
        return read(db(), _principal(), *args)
    except Forbidden:
        abort(403)
    except (NotFound, DomainError):
        abort(404)
