"""How well labelers agree: gold accuracy, Cohen's kappa, Krippendorff's alpha (nominal)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import permutations

Pair = tuple[str, str]


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int

    @property
    def rate(self) -> float | None:
        """Share answered correctly, or None before any answer."""
        return self.correct / self.total if self.total else None


def gold_accuracy(counts: Mapping[Pair, int]) -> Accuracy:
    """Score counts of (answer, gold label) pairs: how many answers match the known label."""
    correct = sum(n for (answer, gold), n in counts.items() if answer == gold)
    return Accuracy(correct, sum(counts.values()))


def cohen_kappa(counts: Mapping[Pair, int]) -> float | None:
    """Cohen's kappa from counts of (rater A's label, rater B's label) pairs.

    Returns None with no pairs, and 1.0 when both raters always give the same single
    label (agreement is perfect, chance agreement is too, and 0/0 is read as agreement).
    """
    total = sum(counts.values())
    if total == 0:
        return None
    observed = sum(n for (a, b), n in counts.items() if a == b) / total
    left: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for (a, b), n in counts.items():
        left[a] += n
        right[b] += n
    expected = sum(left[label] * right[label] for label in left) / (total * total)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def kappa_of_pairs(pairs: Iterable[Pair]) -> float | None:
    """Cohen's kappa of a list of (rater A, rater B) label pairs."""
    return cohen_kappa(Counter(pairs))


def krippendorff_alpha(units: Iterable[Sequence[str]]) -> float | None:
    """Krippendorff's alpha for nominal labels; each unit is the labels its raters gave.

    Units with fewer than two labels carry no information about agreement and are left
    out. Returns None when there are no pairable values, 1.0 when only one label is used.
    """
    coincidence: defaultdict[Pair, float] = defaultdict(float)
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        for a, b in permutations(unit, 2):
            coincidence[(a, b)] += 1 / (m - 1)
    n = sum(coincidence.values())
    if n == 0:
        return None
    marginals: defaultdict[str, float] = defaultdict(float)
    for (a, _), weight in coincidence.items():
        marginals[a] += weight
    disagreeing = sum(w for (a, b), w in coincidence.items() if a != b)
    spread = n * n - sum(v * v for v in marginals.values())  # n(n-1) times expected D
    if spread <= 1e-12:
        return 1.0
    return 1.0 - (n - 1) * disagreeing / spread
