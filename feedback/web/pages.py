"""Project list, project page (versions, runs, retrain, rollback), version page, run page."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from feedback.domain import curve
from feedback.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from feedback.domain.promotion import LOWER_IS_BETTER
from feedback.services import lineage, projects, retrain, rollback, run_report
from feedback.services.users import Principal
from feedback.web.context import db, login_required, session_principal

bp = Blueprint("pages", __name__)


def _me() -> Principal:
    principal = session_principal()
    assert principal is not None  # login_required ran first
    return principal


@bp.get("/")
@login_required
def index() -> str:
    """List the projects this user may see, with queue depth and oldest item."""
    return render_template("projects/list.html", projects=projects.list_projects(db(), _me()))


@bp.get("/projects/<slug>")
@login_required
def project(slug: str) -> str:
    """Show a project: its queue, model versions with holdout metrics, and recent runs."""
    return _project_page(slug, error=None)[0]


def _project_page(slug: str, error: str | None) -> tuple[str, int]:
    try:
        detail = projects.project_detail(db(), _me(), slug)
    except NotFound:
        abort(404)
    page = render_template(
        "projects/detail.html",
        detail=detail,
        chart=_learning_curve(detail),
        is_admin=_me().is_admin,
        error=error,
    )
    return page, 200 if error is None else 422


def _learning_curve(detail: projects.ProjectDetail) -> curve.Chart | None:
    """The project's metric on the holdout against examples trained on, per version."""
    metric = detail.project.promotion_metric
    return curve.chart(
        [
            curve.Version(
                version=v.version,
                train_size=v.train_size,
                score=v.metrics.get(metric),
                baseline=v.baseline_metrics.get(metric),
                promoted=v.decision == "promoted",
            )
            for v in detail.versions
        ],
        lower_is_better=metric in LOWER_IS_BETTER,
    )


@bp.post("/projects/<slug>/retrain")
@login_required
def request_retrain(slug: str) -> Response:
    """Ask for a retrain now (admins only); beat hands it to a worker within a moment."""
    if not _me().is_admin:
        abort(403)
    try:
        run = retrain.request_retrain(db(), _me(), slug)
    except NotFound:
        abort(404)
    flash(f"Retrain run {run} requested; a worker picks it up within one beat interval.")
    return redirect(url_for("pages.run", slug=slug, run_id=run))


@bp.post("/projects/<slug>/champion")
@login_required
def make_champion(slug: str) -> Response | tuple[str, int]:
    """Roll back: serve an earlier promoted version again (admins only)."""
    version = request.form.get("version", "")
    try:
        done = rollback.rollback(db(), _me(), slug, int(version) if version.isdigit() else 0)
    except Forbidden:
        abort(403)
    except NotFound:
        abort(404)
    except (InvalidInput, Conflict) as error:
        return _project_page(slug, error=error.message)
    if done.changed:
        flash(f"v{done.current} serves again (was v{done.previous}); the queue is being re-scored.")
    return redirect(url_for("pages.project", slug=slug))


@bp.get("/projects/<slug>/versions/<int:version>")
@login_required
def version(slug: str, version: int) -> str | tuple[str, int]:
    """Show one version: metrics, lineage, timings, and what changed since another version."""
    since = request.args.get("since", "")
    try:
        detail = lineage.version_detail(db(), _me(), slug, version)
        base = int(since) if since.isdigit() else detail["parent_version"] or version - 1
        changes = lineage.changes_since(db(), _me(), slug, base, version) if base >= 1 else None
    except NotFound:
        abort(404)
    except InvalidInput as error:
        if not error.details or error.details[0].field != "since":
            abort(404)
        return _version_error(slug, version, error.message)
    return render_template("projects/version.html", slug=slug, v=detail, changes=changes)


def _version_error(slug: str, version: int, message: str) -> tuple[str, int]:
    detail = lineage.version_detail(db(), _me(), slug, version)
    page = render_template(
        "projects/version.html", slug=slug, v=detail, changes=None, error=message
    )
    return page, 422


@bp.get("/projects/<slug>/runs/<int:run_id>")
@login_required
def run(slug: str, run_id: int) -> str:
    """Show a retrain run's progress by stage; run.js refreshes it while it is active."""
    try:
        found = run_report.describe_run(db(), _me(), slug, run_id)
    except NotFound:
        abort(404)
    return render_template("projects/run.html", slug=slug, run=found)
