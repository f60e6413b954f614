"""Project list and project page (model versions, runs, retrain button)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from feedback.domain.errors import NotFound
from feedback.services import projects, retrain
from feedback.web.context import db, login_required, session_principal

bp = Blueprint("pages", __name__)


@bp.get("/")
@login_required
def index() -> str:
    """List the projects this user may see, with queue depth and oldest item."""
    principal = session_principal()
    assert principal is not None
    return render_template("projects/list.html", projects=projects.list_projects(db(), principal))


@bp.get("/projects/<slug>")
@login_required
def project(slug: str) -> str:
    """Show a project: its queue, model versions with holdout metrics, and recent runs."""
    principal = session_principal()
    assert principal is not None
    try:
        detail = projects.project_detail(db(), principal, slug)
    except NotFound:
        abort(404)
    return render_template("projects/detail.html", detail=detail, is_admin=principal.is_admin)


@bp.post("/projects/<slug>/retrain")
@login_required
def request_retrain(slug: str) -> Response:
    """Ask for a retrain now (admins only); the next beat tick dispatches it."""
    principal = session_principal()
    assert principal is not None
    if not principal.is_admin:
        abort(403)
    try:
        run = retrain.request_retrain(db(), principal, slug)
    except NotFound:
        abort(404)
    flash(f"Retrain run {run} requested; a worker picks it up within one beat interval.")
    return redirect(url_for("pages.project", slug=slug))
