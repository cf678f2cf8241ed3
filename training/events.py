"""Run events: small dicts yielded by training generators and written as JSON lines."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class EventLog:
    """Appends one JSON object per line to ``events.jsonl``; also keeps ``metrics.csv``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "events.jsonl"
        self.csv = run_dir / "metrics.csv"

    def write(self, event: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in event.items()}) + "\n")
        if event.get("event") == "eval":
            new = not self.csv.exists()
            keys = sorted(k for k in event if k != "event")
            with open(self.csv, "a", encoding="utf-8") as fh:
                if new:
                    fh.write(",".join(keys) + "\n")
                fh.write(",".join(str(event[k]) for k in keys) + "\n")
