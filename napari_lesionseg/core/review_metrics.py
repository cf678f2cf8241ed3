"""Does the fuzzy map lead a reviewer to the mask's mistakes? Pixel and lesion figures for
``lesionseg evaluate``.

- **Top-k capture**: the share of the mask's wrong pixels (against the annotation) among the
  ``k`` % of each photo's disc where a map is highest. Ties at the cut are shared out evenly
  (a map that saturates gets no credit for the order it does not have).
- **Queue reach**: of the annotated lesions the mask misses entirely (8-connected components
  touching no mask pixel), the share that one of the review queue's first ``n`` regions
  touches; of the mask's false alarms (components touching no annotated pixel), the share
  among those first ``n`` regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from numpy.typing import NDArray

from .lesions import label_runs
from .review import ReviewSet

TOP_FRACTIONS = (0.01, 0.05, 0.10)
QUEUE_FIRST = 20


def top_capture(score: NDArray, wrong: NDArray[np.bool_], region: NDArray[np.bool_],
                fractions: tuple[float, ...] = TOP_FRACTIONS) -> NDArray[np.float64]:
    """Expected number of ``wrong`` pixels among the top ``fractions`` of ``region`` by ``score``."""
    s = np.asarray(score)[region].astype(np.float32, copy=False)
    w = np.asarray(wrong)[region]
    out = np.zeros(len(fractions))
    if s.size == 0:
        return out
    sw = s[w]
    for j, f in enumerate(fractions):
        n = min(s.size, max(1, int(round(f * s.size))))
        cut = np.partition(s, s.size - n)[s.size - n]  # the n-th largest value
        above = int(np.count_nonzero(s > cut))
        at = int(np.count_nonzero(s == cut))
        out[j] = np.count_nonzero(sw > cut) + np.count_nonzero(sw == cut) * (n - above) / max(at, 1)
    return out


@dataclass
class QueueReach:
    missed: int = 0
    missed_reached: int = 0
    false_alarms: int = 0
    false_alarms_shown: int = 0

    def __iadd__(self, other: QueueReach) -> QueueReach:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def queue_reach(review: ReviewSet, gt: NDArray[np.bool_], first: int = QUEUE_FIRST) -> QueueReach:
    """How the first ``first`` regions of ``review`` meet the mask's missed lesions and false
    alarms (``gt``: the annotation, unsure pixels already removed)."""
    gt_lab, n_gt, gidx, gids = label_runs(np.asarray(gt, bool))
    lesion = review.lesion_components > 0
    gt_hit = np.zeros(n_gt + 1, bool)
    gt_hit[gids[lesion.ravel()[gidx]]] = True
    missed = np.flatnonzero(~gt_hit[1:]) + 1
    head = review.regions[:first]
    shown_fz = np.zeros(int(review.fuzzy_components.max(initial=0)) + 1, bool)
    shown_fz[[r.label for r in head if r.kind == "fuzzy"]] = True
    reached_ids = gids[shown_fz[review.fuzzy_components.ravel()[gidx]]]
    n_reached = int(np.count_nonzero(np.isin(missed, reached_ids)))
    n_les = int(review.lesion_components.max(initial=0))
    les_hit = np.zeros(n_les + 1, bool)
    les_hit[review.lesion_components.ravel()[gidx]] = True
    fa = ~les_hit[1:]
    shown = sum(1 for r in head if r.kind == "lesion" and fa[r.label - 1])
    return QueueReach(len(missed), n_reached, int(fa.sum()), shown)


@dataclass
class ReviewTally:
    """Sums over photos, for the fuzzy map and for the entropy of the same probability."""

    wrong: int = 0
    captured: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    queues: dict[str, QueueReach] = field(default_factory=dict)

    def add(self, wrong: int, captured: dict[str, NDArray[np.float64]], queues: dict[str, QueueReach]) -> None:
        self.wrong += wrong
        for k, v in captured.items():
            self.captured[k] = self.captured.get(k, np.zeros(len(v))) + v
        for k, q in queues.items():
            self.queues.setdefault(k, QueueReach())
            self.queues[k] += q

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, cap in self.captured.items():
            for f, c in zip(TOP_FRACTIONS, cap):
                out[f"{name}_top{round(f * 100)}pct_error_capture"] = c / self.wrong if self.wrong else float("nan")
        for name, q in self.queues.items():
            out[f"{name}_queue_missed_lesions"] = float(q.missed)
            out[f"{name}_queue_missed_reached"] = q.missed_reached / q.missed if q.missed else float("nan")
            out[f"{name}_queue_false_alarms"] = float(q.false_alarms)
            out[f"{name}_queue_false_alarms_shown"] = (q.false_alarms_shown / q.false_alarms
                                                       if q.false_alarms else float("nan"))
        return out
