"""Benchmark: how long the GUI thread stalls while *Segment lesions* runs on the bundled sample
(4288x2848) with the shipped model, and while *Open next image* of *Review lesions* goes from one
segmented sample to the other, as an annotator sees it: a 10-ms Qt timer on the main thread
records when it fires; a gap longer than its period is a stall (the viewer does not repaint or
take input). Each measurement in a new process (a new napari, as an annotator starts it); three
runs each of: the first run (layers added), a second run (layer data
replaced), and a first run with a project folder set (the prediction stored, off the GUI
thread). Reports the longest stall, the time spent showing the result (adding/replacing the
layers, one per turn of the event loop, then counts and table: the sum and the longest step),
and the total stalled time; writes results/gui_pauses.json.

``--where KIND`` instead profiles one measurement (e.g. ``--where "first run"``): a thread
samples the GUI thread's stack every 5 ms while a 5-ms heartbeat timer on it is late by more
than 60 ms, and the longest stalls are printed with their commonest stacks (where the time
goes, not how long: the sampler itself slows the process).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_pauses.py [--runs 3] [--where KIND]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent


def _stalls(ticks: list[float]) -> dict[str, float]:
    """The 10-ms timer's gaps: the longest, and those over 50 ms (count and sum)."""
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    stalls = [g for g in gaps if g > 0.05]
    return {"longest_stall_s": max(gaps, default=0.0), "stalled_s": sum(stalls), "stalls_over_50ms": len(stalls)}


def _measure(kind: str) -> dict[str, float]:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-lesionseg", "idrid_04")
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    tmp = tempfile.TemporaryDirectory()
    if kind in ("with project", "open next image"):
        seg.project_edit.setText(tmp.name)
        seg.project_edit.editingFinished.emit()

    def run_once() -> None:
        seg.run()
        while not (seg.run_button.enabled and "lesion(s)" in seg.status.text()):
            QApplication.processEvents()
            time.sleep(0.002)
        w = getattr(seg, "_store_worker", None)
        while w is not None and w.is_running:
            QApplication.processEvents()
            time.sleep(0.002)

    if kind == "second run":
        run_once()
    if kind == "open next image":
        return _measure_open_next(viewer, seg, run_once, tmp)
    on_result = []  # each step of showing the result (a layer added or replaced; counts and table)
    real = seg.turns._next

    def timed() -> None:
        t0 = time.perf_counter()
        real()
        on_result.append(time.perf_counter() - t0)

    seg.turns._next = timed  # the queue's first step and the event loop's later turns call it through the instance
    seg.worker = None
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    # the returned signal was connected to the bound method at run(): rebind through a lambda
    run_once_start = time.perf_counter()
    run_once()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    timer.stop()
    total = time.perf_counter() - run_once_start
    viewer.close()
    tmp.cleanup()
    return {**_stalls(ticks), "on_result_s": sum(on_result) if on_result else float("nan"),
            "longest_result_step_s": max(on_result, default=float("nan")), "run_s": total}


def _measure_open_next(viewer, seg, run_once, tmp) -> dict[str, float]:
    """Both samples segmented into a project, IDRiD_16 closed; Review's *Open next image* goes
    from IDRiD_04 (shown) to IDRiD_16: four layers closed, the project read, four opened."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    run_once()
    viewer.open_sample("napari-lesionseg", "idrid_16")
    seg.image_picker.choose("IDRiD_16")
    run_once()
    for name in [ly.name for ly in viewer.layers if ly.name.startswith("IDRiD_16")]:
        viewer.layers.remove(name)
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions", tabify=True)
    rev.image_picker.choose("IDRiD_04")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    while len(ticks) < 5:  # the timer ticking before the press, so a stall from the press on is seen
        QApplication.processEvents()
        time.sleep(0.002)
    t0 = time.perf_counter()
    opened = rev.open_next_image()
    while rev.turns.busy:
        QApplication.processEvents()
        time.sleep(0.002)
    took = time.perf_counter() - t0
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    timer.stop()
    assert opened == "IDRiD_16" and "IDRiD_16 lesions" in viewer.layers, opened
    viewer.close()
    tmp.cleanup()
    return {**_stalls(ticks), "on_result_s": took, "longest_result_step_s": float("nan"), "run_s": took}


def _where(kind: str, stalls: int = 4, depth: int = 8) -> None:
    """Profile one measurement of ``kind``: the GUI thread's stacks during its longest stalls."""
    import collections
    import threading
    import traceback

    import napari
    from qtpy.QtCore import QTimer

    gui = threading.get_ident()
    beat = [time.perf_counter()]
    samples: list[tuple[float, float, list[str]]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            late = time.perf_counter() - beat[0]
            frame = sys._current_frames().get(gui)
            if late > 0.06 and frame is not None:
                stack = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}"
                         for f in traceback.extract_stack(frame)]
                samples.append((beat[0], late, stack[::-1][:depth]))

    timers = []
    make_viewer = napari.Viewer

    def viewer_with_heartbeat(*a, **k):
        viewer = make_viewer(*a, **k)
        t = QTimer()
        t.setInterval(5)
        t.timeout.connect(lambda: beat.__setitem__(0, time.perf_counter()))
        t.start()
        timers.append(t)
        return viewer

    napari.Viewer = viewer_with_heartbeat
    threading.Thread(target=sample, daemon=True).start()
    print(_measure(kind))
    done.set()
    by_stall: dict[float, list[tuple[float, list[str]]]] = collections.defaultdict(list)
    for start, late, stack in samples:
        by_stall[start].append((late, stack))
    longest = sorted(by_stall.values(), key=lambda ss: -max(late for late, _ in ss))
    for ss in longest[1:stalls + 1]:  # the first is napari starting up (imports, themes)
        print(f"\nstall of {max(late for late, _ in ss):.3f} s, {len(ss)} samples; commonest stacks, innermost first:")
        for stack, n in collections.Counter(" <- ".join(st) for _, st in ss).most_common(4):
            print(f"  {n:3d}  {stack}")


def _in_new_process(kind: str) -> dict[str, float]:
    """One measurement in a fresh napari process, as an annotator starts it."""
    out = subprocess.run([sys.executable, __file__, "--worker", kind], capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--where", default=None, help="profile one measurement of this kind instead")
    args = ap.parse_args()
    if args.where:
        _where(args.where)
        return
    if args.worker:
        print("RESULT " + json.dumps(_measure(args.worker)))
        return
    rows = {}
    for kind in ("first run", "second run", "with project", "open next image"):
        res = [_in_new_process(kind) for _ in range(args.runs)]
        rows[kind] = {k: statistics.median(r[k] for r in res) for k in res[0]} | {"runs": res}
    print(f"{'':14s} {'longest stall':>14s} {'showing result':>15s} {'longest step':>13s} {'stalled total':>14s} "
          f"{'run':>8s}  (medians, s)")
    for kind, r in rows.items():
        print(f"{kind:14s} {r['longest_stall_s']:14.3f} {r['on_result_s']:15.3f} {r['longest_result_step_s']:13.3f} "
              f"{r['stalled_s']:14.3f} {r['run_s']:8.2f}")
    out = HERE / "results" / "gui_pauses.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json_text({"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
