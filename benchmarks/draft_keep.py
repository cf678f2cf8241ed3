"""Benchmark: what keeping a photo's unsaved hand edits as a draft costs (``viewer_session.keep_drafts``:
two seconds after painting stops, ``AnnotationSession.draft_job`` on the GUI thread, then the
write on a thread of its own), for label maps of the sizes the plugin meets: a sample photo
(2144x1424), a full IDRiD photo (4288x2848) and a larger camera's (6000x4000), each holding one
model lesion and a painted edit.

    python benchmarks/draft_keep.py [--runs 15]

Prints a table (median and max of the GUI-thread part, median of the write, the draft file's size)
and writes ``results/draft_keep.json``. Time it on an idle machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text
from napari_lesionseg.core.session import AnnotationSession, Photo
from napari_lesionseg.core.store import Project

HERE = Path(__file__).resolve().parent
SIZES = {"sample 2144x1424": (1424, 2144), "IDRiD 4288x2848": (2848, 4288), "6000x4000": (4000, 6000)}
SAMPLE = HERE.parent / "sample_data" / "IDRiD_04.jpg"


def measure(shape: tuple[int, int], runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        session = AnnotationSession(project_dir=Path(tmp) / "proj")
        iid = Project(Path(tmp) / "proj").add_image(SAMPLE)  # the label map's size is what counts
        model = np.zeros(shape, np.uint8)
        model[shape[0] // 3: shape[0] // 3 + 60, shape[1] // 2: shape[1] // 2 + 90] = 1
        session.photos["p"] = Photo("p", image_id=iid, auto_mask=model)
        edited = model.copy()
        edited[100:140, 200:280] = 1  # a painted stroke
        edited[300:310, 300:310] = 255
        gui, write = [], []
        for _ in range(runs + 1):  # the first warms up
            t0 = time.perf_counter()
            job = session.draft_job("p", edited)
            t1 = time.perf_counter()
            job()
            gui.append(t1 - t0)
            write.append(time.perf_counter() - t1)
        size = (session.project.root / "drafts" / f"{iid}.png").stat().st_size
    return {"gui_thread_median_ms": 1000 * statistics.median(gui[1:]), "gui_thread_max_ms": 1000 * max(gui[1:]),
            "write_median_ms": 1000 * statistics.median(write[1:]), "draft_bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "draft_keep.json")
    args = ap.parse_args()
    rows = {name: measure(shape, args.runs) for name, shape in SIZES.items()}
    print(f"{'label map':20s} {'GUI thread ms (median / max)':>30s} {'write ms':>10s} {'draft KB':>10s}")
    for name, r in rows.items():
        print(f"{name:20s} {r['gui_thread_median_ms']:17.1f} / {r['gui_thread_max_ms']:6.1f} "
              f"{r['write_median_ms']:10.1f} {r['draft_bytes'] / 1024:10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text({"machine": platform.machine(), "processor": platform.processor(),
                                   "date": time.strftime("%Y-%m-%d"), "runs": args.runs, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
