"""The labeler API: claim under a lease, vote with its fence, extend, release."""

from __future__ import annotations

from flask import Response, jsonify

from feedback.schemas import FenceIn, VoteIn
from feedback.services import queue
from feedback.web.api.common import api_blueprint, json_body, parse, principal
from feedback.web.context import db, settings

bp = api_blueprint("api_queue")


@bp.post("/api/v1/projects/<slug>/queue/claim")
def post_claim(slug: str) -> Response | tuple[str, int]:
    """Lease the next item for the calling labeler; 204 when none is available."""
    claim = queue.claim_next(db(), principal(), slug, settings().lease_seconds)
    if claim is None:
        return "", 204
    return jsonify(
        {
            "item": {
                "id": claim.item_id,
                "input": claim.input,
                "display": claim.display,
                "prediction": claim.prediction,
                "lease": {"expires_at": claim.expires_at.isoformat() + "Z", "fence": claim.fence},
            }
        }
    )


@bp.post("/api/v1/items/<int:item_id>/votes")
def post_vote(item_id: int) -> tuple[Response, int]:
    """Record a vote under the current lease; 409 when the lease is lost or stale."""
    caller = principal()
    vote = parse(VoteIn, json_body())
    result = queue.cast_vote(db(), caller, item_id, vote.label, vote.fence, vote.seconds)
    return jsonify(
        {"item_id": result.item_id, "outcome": result.outcome, "label": result.label}
    ), 201


@bp.post("/api/v1/items/<int:item_id>/lease")
def post_extend(item_id: int) -> Response:
    """Extend the caller's lease (heartbeat)."""
    caller = principal()
    fence = parse(FenceIn, json_body()).fence
    expires = queue.extend(db(), caller, item_id, fence, settings().lease_seconds)
    return jsonify({"expires_at": expires.isoformat() + "Z", "fence": fence})


@bp.post("/api/v1/items/<int:item_id>/release")
def post_release(item_id: int) -> Response:
    """Give the item back to the pool (skip)."""
    caller = principal()
    queue.release(db(), caller, item_id, parse(FenceIn, json_body()).fence)
    return jsonify({"released": item_id})
