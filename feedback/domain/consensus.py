"""Turning the votes on one item into a decision."""

from __future__ import annotations

from collections import Counter
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


def majority(votes: list[str], overlap: int) -> Verdict:
    """Decide by strict majority once `overlap` votes are in; unsure or a tie escalates."""
    if UNSURE in votes:
        return Verdict(Outcome.ESCALATED)
    if len(votes) < overlap:
        return Verdict(Outcome.PENDING)
    (label, count), *rest = Counter(votes).most_common()
    if rest and rest[0][1] == count:
        return Verdict(Outcome.ESCALATED)
    return Verdict(Outcome.DECIDED, label)
