"""Admin pages: users and membership, tokens, leases in flight, labelers, gold answers."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from feedback.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from feedback.services import admin, gold, projects
from feedback.services.users import ROLES, Principal
from feedback.web.context import db, login_required, session_principal

bp = Blueprint("admin", __name__, url_prefix="/admin")
View = TypeVar("View", bound=Callable[..., Any])
Page = str | Response | tuple[str, int]


@bp.app_context_processor
def viewer() -> dict[str, Any]:
    """Expose the logged-in user to every template (for role-dependent links)."""
    return {"viewer": session_principal()}


def admin_required(view: View) -> View:
    """Log in first; then only admins get past (403 for everyone else)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        principal = session_principal()
        if principal is not None and not principal.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast(View, login_required(wrapped))


def _me() -> Principal:
    principal = session_principal()
    assert principal is not None
    return principal


def _problem(error: DomainError) -> tuple[str, int]:
    """A refused change as (message naming the fields, status) for the page shown again."""
    if isinstance(error, InvalidInput):
        fields = "; ".join(f"{d.field}: {d.message}" for d in error.details)
        return f"{error.message} ({fields})", 422
    if isinstance(error, NotFound):
        return error.message, 404
    return error.message, 409 if isinstance(error, Conflict) else 403


@bp.get("/")
@admin_required
def home() -> str:
    """Links to every admin page, per project."""
    return render_template("admin/home.html", projects=projects.list_projects(db(), _me()))


@bp.route("/users", methods=["GET", "POST"])
@admin_required
def users_page() -> Page:
    """List users with their projects; create a user with a role."""
    error, status, form = None, 200, {"email": "", "role": "labeler"}
    if request.method == "POST":
        form = {"email": request.form.get("email", ""), "role": request.form.get("role", "")}
        try:
            admin.create_user(
                db(), _me(), form["email"], request.form.get("password", ""), form["role"]
            )
        except DomainError as refused:
            error, status = _problem(refused)
        else:
            flash(f"User {form['email']} created.")
            return redirect(url_for("admin.users_page"))
    rows, slugs = admin.list_users(db(), _me())
    html = render_template(
        "admin/users.html", users=rows, slugs=slugs, roles=ROLES, error=error, form=form
    )
    return html, status


@bp.post("/users/<int:user_id>/memberships")
@admin_required
def membership(user_id: int) -> Response:
    """Add the user to a project, or remove them from it."""
    slug, member = request.form.get("project", ""), request.form.get("action") != "remove"
    try:
        admin.set_membership(db(), _me(), user_id, slug, member)
    except DomainError as refused:
        flash(_problem(refused)[0])
    else:
        flash(f"{'Added to' if member else 'Removed from'} {slug}.")
    return redirect(url_for("admin.users_page"))


@bp.route("/tokens", methods=["GET", "POST"])
@admin_required
def tokens() -> Page:
    """List tokens; create one (its secret is shown on this response only, never again)."""
    created, error, status = None, None, 200
    if request.method == "POST":
        scope = request.form.get("scope", "")
        slug, email = (scope, None) if request.form.get("kind") == "project" else (None, scope)
        try:
            created = admin.create_token(db(), _me(), request.form.get("name", ""), slug, email)
        except DomainError as refused:
            error, status = _problem(refused)
    rows, slugs = admin.list_tokens(db(), _me()), admin.list_users(db(), _me())[1]
    html = render_template(
        "admin/tokens.html", tokens=rows, created=created, error=error, slugs=slugs
    )
    return html, status


@bp.post("/tokens/<int:token_id>/revoke")
@admin_required
def revoke(token_id: int) -> Response:
    """Revoke a token now."""
    try:
        admin.revoke_token(db(), _me(), token_id)
    except DomainError as refused:
        flash(_problem(refused)[0])
    else:
        flash(f"Token {token_id} revoked.")
    return redirect(url_for("admin.tokens"))


@bp.get("/projects/<slug>/leases")
@admin_required
def leases(slug: str) -> str:
    """Show the leases in flight: who holds which item, until when."""
    rows = _read(admin.leases_in_flight, slug)
    return render_template("admin/leases.html", slug=slug, leases=rows)


@bp.post("/projects/<slug>/leases/<int:lease_id>/release")
@admin_required
def force_release(slug: str, lease_id: int) -> Response:
    """End a lease now; the item goes back to the pool."""
    try:
        admin.force_release(db(), _me(), slug, lease_id)
    except NotFound:
        abort(404)
    except DomainError as refused:
        flash(_problem(refused)[0])
    else:
        flash(f"Lease {lease_id} released.")
    return redirect(url_for("admin.leases", slug=slug))


@bp.get("/projects/<slug>/labelers")
@admin_required
def labelers(slug: str) -> str:
    """Per-labeler throughput, gold accuracy and agreement with consensus."""
    stats = _read(gold.labeler_stats, slug)
    return render_template("admin/labelers.html", slug=slug, stats=stats)


@bp.post("/projects/<slug>/items/<int:item_id>/gold")
@admin_required
def set_gold(slug: str, item_id: int) -> Response:
    """Set or clear an item's gold answer."""
    label = request.form.get("label") or None
    try:
        gold.set_gold(db(), _me(), slug, item_id, label)
    except NotFound:
        abort(404)
    except DomainError as refused:
        flash(_problem(refused)[0])
    else:
        flash(f"Gold answer of item {item_id}: {label or 'none'}.")
    return redirect(url_for("review.history", slug=slug, item_id=item_id))


def _read(read: Callable[..., Any], slug: str) -> Any:
    try:
        return read(db(), _me(), slug)
    except NotFound:
        abort(404)
    except Forbidden:
        abort(403)
