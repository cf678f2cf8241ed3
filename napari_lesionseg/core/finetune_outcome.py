"""What a finished fine-tune amounts to, in words, for both of its doors: the Fine-tune dock
and ``lesionseg finetune``. Read from the fine-tune's ``plan`` event (which photos it trained
and scored on) and its ``finished`` event (old and new scores, the step whose weights it
kept); a model folder's ``metrics.json`` holds the same ``old`` / ``new`` / ``best_step``."""

from __future__ import annotations

from typing import Any

from .lesion_types import LONG_NAMES

SCORE_KEYS = ("aupr", "dice_ds", "recall_ds", "precision_ds")
WORSE_BY = 0.005  # a new score this much below the old one is "worse" (Dice or AUPR)


def scored_in_sample(plan: dict[str, Any]) -> bool:
    """The fine-tune's plan scored old and new on photos it also trained on (too few to hold out)."""
    val = plan.get("val", [])
    return bool(val) and set(val) <= set(plan.get("train", []))


def scored_on(plan: dict[str, Any]) -> str:
    """Which photos the old -> new scores rest on, from the fine-tune's plan event."""
    val = plan.get("val", [])
    if not val:
        return "(no validation photos)"
    if scored_in_sample(plan):
        return (f"on the {len(val)} photo(s) it trained on (too few corrections to hold any out: "
                "optimistic)")
    return f"on {len(val)} held-out photo(s) ({', '.join(val)})"


def scores_worse(done: dict[str, Any]) -> str:
    """What the new model scores worse on (Dice or AUPR by more than ``WORSE_BY``), or ''.
    ``done``: the finished event (``old_dice_ds``, ``new_dice_ds``, ...)."""
    return "; ".join(f"{k} {old:.3f} -> {new:.3f}" for k, old, new in _headline(done) if new < old - WORSE_BY)


def _headline(done: dict[str, Any]) -> list[tuple[str, float, float]]:
    """``(key, old, new)`` for Dice (dataset) and AUPR, those the finished event holds."""
    return [(k, done["old_" + k], done["new_" + k]) for k in ("dice_ds", "aupr")
            if done.get("old_" + k) is not None and done.get("new_" + k) is not None]


def outcome(done: dict[str, Any]) -> str:
    """``"worse"``: the new version scores worse than the base model (``scores_worse``);
    ``"kept"``: no fine-tuned checkpoint scored better, so the new version holds the base
    model's own weights (the fine-tune's step 0); else ``"new"``."""
    if scores_worse(done):
        return "worse"
    return "kept" if done.get("best_step") == 0 else "new"


def scored_type(done: dict[str, Any]) -> str:
    """'' when the scores are the hemorrhages' (as usual), else `` (microaneurysm scores)``:
    the photos scored were reviewed for that type, not for hemorrhages."""
    t = done.get("old_type")
    return f" ({LONG_NAMES.get(t, t)} scores)" if t else ""


def verdict(done: dict[str, Any], plan: dict[str, Any], name: str) -> str:
    """One sentence on the new version ``name`` (see ``outcome``), with the photos its scores
    rest on. Says nothing of buttons or commands: each door adds how to act on it."""
    kind = outcome(done)
    if kind == "worse":
        return (f"new version {name} scores WORSE than the old model{scored_type(done)} {scored_on(plan)} "
                f"({scores_worse(done)})")
    if kind == "kept":
        return (f"no fine-tuned checkpoint scored better than the old model{scored_type(done)} {scored_on(plan)}: "
                f"new version {name} keeps the old weights")
    scores = [f"{k} {old:.3f} -> {new:.3f}" for k, old, new in _headline(done)]
    if not scores:
        return f"new version {name} {scored_on(plan)}"
    return f"new version {name}, scored{scored_type(done)} {scored_on(plan)}: " + ", ".join(scores)
