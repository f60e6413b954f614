"""Which kind of item a claim serves: a gold item, a random pick, or the most useful one."""

from __future__ import annotations

from enum import StrEnum


class Pick(StrEnum):
    TOP = "top"  # highest priority first (the uncertainty strategy's order)
    RANDOM = "random"  # a uniformly random queued item, for batch diversity
    GOLD = "gold"  # an item with a known answer, to measure the labeler


def choose_pick(gold_rate: float, random_share: float, draw: float) -> Pick:
    """Choose what one claim serves from a uniform draw in [0, 1).

    The first `gold_rate` of the unit interval serves gold, the next `random_share` of
    what is left serves a random pick, the rest the top of the queue.
    """
    gold_rate = min(max(gold_rate, 0.0), 1.0)
    random_share = min(max(random_share, 0.0), 1.0)
    if draw < gold_rate:
        return Pick.GOLD
    if draw < gold_rate + (1.0 - gold_rate) * random_share:
        return Pick.RANDOM
    return Pick.TOP
