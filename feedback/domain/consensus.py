"""Turning the votes on one item into a decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

UNSURE = "unsure"


class Outcome(StrEnum):
    PENDING = "pending"
    DECIDED = "decided"
    ESCALATED = "escalated"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    label: str | None = None


def majority(votes: Sequence[str], overlap: int) -> Verdict:
    """Decide by strict majority once `overlap` votes are in; unsure, a tie or a split escalates.

    "Unsure" escalates at once: a labeler saying they cannot tell is information the
    reviewer needs, and waiting for more votes would only spend labels on a hard item.
    A plurality that is not a strict majority (2 of 4, say) escalates too, so a decision
    always has more than half of the votes behind it.
    """
    if UNSURE in votes:
        return Verdict(Outcome.ESCALATED)
    if not votes or len(votes) < max(overlap, 1):
        return Verdict(Outcome.PENDING)
    label, count = Counter(votes).most_common(1)[0]
    if 2 * count <= len(votes):
        return Verdict(Outcome.ESCALATED)
    return Verdict(Outcome.DECIDED, label)
