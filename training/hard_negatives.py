"""Online hard-negative crops: where the network being trained raises a false alarm, remembered
per photo so that later crops are centred there (``data.hard_negatives``).

Each training step already predicts its crops; :meth:`FalseAlarms.observe` takes that prediction
(the hemorrhage channel), and per crop the most confident pixel labelled background that lies at
least ``margin`` pixels from any lesion pixel of the crop (so a lesion's own blurred border is not
counted) and whose probability exceeds ``threshold``. Its place on the photo comes from the
sampler's ``last_where`` (the flat index of each crop pixel's source, carried through flips,
turns and zoom), so the memory holds photo positions, not crop positions. A photo keeps its last
``memory`` false alarms; the sampler draws one of them for a share of its background crops.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from .train_config import HardNegativeConfig


class FalseAlarms:
    """The remembered false alarms of the training photos ``0 .. n_photos - 1`` (replay photos,
    indexed after them, are not remembered)."""

    def __init__(self, n_photos: int, cfg: HardNegativeConfig) -> None:
        self.cfg = cfg
        self.n_photos = n_photos
        self.places: list[deque[int]] = [deque(maxlen=cfg.memory) for _ in range(n_photos)]

    def observe(self, p: torch.Tensor, y: torch.Tensor, idx: np.ndarray, where: np.ndarray) -> int:
        """Remember this step's false alarms. ``p``: probabilities ``(B, T, s, s)`` (channel 0 is
        the hemorrhage map); ``y``: labels ``(B, s, s)`` or ``(B, T, s, s)`` (255 unknown);
        ``idx``: each crop's photo; ``where``: each crop pixel's flat index on its photo (-1
        outside). Returns how many were remembered."""
        with torch.no_grad():
            prob = p[:, 0].detach().float()
            lab = (y[:, 0] if y.ndim == 4 else y).to(prob.device)
            lesion = (lab == 1).float()[:, None]
            m = self.cfg.margin
            near = F.max_pool2d(lesion, 2 * m + 1, stride=1, padding=m)[:, 0] > 0 if m else lesion[:, 0] > 0
            src = torch.from_numpy(np.ascontiguousarray(where)).to(prob.device)
            ok = (lab == 0) & ~near & (src >= 0)
            score = torch.where(ok, prob, torch.full_like(prob, -1.0)).flatten(1)
            best, at = score.max(1)
        found = 0
        for b in np.flatnonzero((best > self.cfg.threshold).cpu().numpy()):
            i = int(idx[b])
            if i < self.n_photos:
                self.places[i].append(int(where[b].reshape(-1)[int(at[b])]))
                found += 1
        return found

    def draw(self, i: int, rng: np.random.Generator) -> int | None:
        """One of photo ``i``'s remembered false alarms (a flat index), or None if it has none."""
        if i >= self.n_photos or not self.places[i]:
            return None
        kept = self.places[i]
        return kept[int(rng.integers(len(kept)))]

    def state_dict(self) -> dict:
        return {"places": [list(d) for d in self.places]}

    def load_state_dict(self, state: dict) -> None:
        places = state["places"]
        if len(places) != self.n_photos:
            raise ValueError(f"the resume state remembers false alarms on {len(places)} photos; "
                             f"this run trains on {self.n_photos}")
        self.places = [deque(p, maxlen=self.cfg.memory) for p in places]
