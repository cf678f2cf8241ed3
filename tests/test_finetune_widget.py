"""One-click fine-tuning from the plugin: a real subprocess, live events, promote/discard,
cancel and failure, with the viewer's event loop running throughout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from napari_lesionseg.core.image_io import read_mask
from napari_lesionseg.core.registry import Registry
from napari_lesionseg.core.store import Project

napari = pytest.importorskip("napari")
pytestmark = pytest.mark.gui


@pytest.fixture()
def project(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> Path:
    proj = Project(tmp_path / "proj")
    for img in sorted((small_pairs / "images").iterdir()):
        iid = proj.add_image(img)
        proj.save_label(iid, read_mask(small_pairs / "masks" / f"{img.stem}_HE.png"), model_version="tiny-test")
    shutil.copytree(tiny_model_dir, proj.root / "models" / "tiny")
    Registry(proj.root).promote("tiny")
    return proj.root


@pytest.fixture()
def widget(make_napari_viewer, project: Path):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Fine-tune model")
    w.project_edit.setText(str(project))
    w.minutes.value = 1.0
    return w


def test_preflight_counts_corrections(widget) -> None:
    info = widget.preflight()
    assert info["pairs"] == 2 and info["base"].name == "tiny"
    assert "2 corrected image(s)" in widget.preflight_label.text()
    assert f"at most {widget.minutes.value:.1f} min in all" in widget.preflight_label.text()
    assert "nothing to learn" not in widget.preflight_label.text()
    # a model folder copied in without its weights is said, not silently left out of the list
    shutil.copytree(widget.session.project.root / "models" / "tiny", widget.session.project.root / "models" / "copied",
                    ignore=shutil.ignore_patterns("weights.safetensors"))
    widget.preflight()
    assert "models/copied is not a model version (no weights.safetensors)" in widget.preflight_label.text()
    assert "copied" not in widget.versions.choices


def test_an_active_version_moved_away_is_said_not_silently_replaced(widget, project: Path, tmp_path: Path) -> None:
    """The project's active version moved out of models/ by hand: the project runs the shipped
    default, which the dock, ``predict --project`` and ``models`` now say (it went unsaid)."""
    from test_cli import lesionseg

    shutil.move(project / "models" / "tiny", tmp_path / "tiny elsewhere")
    widget.preflight()
    assert "base model: default" in widget.preflight_label.text()
    assert "active model 'tiny' is no longer in" in widget.preflight_label.text()
    r = lesionseg("models", "--project", project)
    assert r.returncode == 0 and "active: the shipped default model" in r.stdout and "'tiny' is no longer in" in r.stdout
    r = lesionseg("predict", project / "images" / "IDRiD_16.jpg", "--project", project, "--quiet")
    assert r.returncode == 0 and "'tiny' is no longer in" in r.stderr, r.stderr


def test_preflight_says_when_the_model_has_nothing_to_learn_from_the_corrections(widget, project: Path) -> None:
    """Corrections reviewed for microaneurysms only, and a hemorrhage model: said before the
    click, not only by the fine-tune's error after it."""
    import numpy as np

    from napari_lesionseg.core.lesion_types import TYPE_VALUE

    proj = Project(project)
    for iid in proj.image_ids():
        he = proj.latest_label(iid)
        proj.save_label(iid, np.where(he == 1, TYPE_VALUE["MA"], 0).astype(np.uint8), types=["MA"])
    widget.preflight()
    text = widget.preflight_label.text()
    assert "reviewed for MA on 2" in text and "The base model has HE only: it has nothing to learn" in text
    # a click starts nothing (a fine-tune process ran only to fail on the corrections' types) and says why
    versions = Registry(project).versions()
    assert widget.start() is None and widget.process is None
    assert "nothing to learn" in widget.status.text() and Registry(project).versions() == versions


def test_the_status_says_how_long_the_training_has_left(widget) -> None:
    """The status said "old model scored; training..." until the first validation: on a CPU
    without bf16 that is a minute and a half with nothing said. Each step the trainer paces says
    the step and the training time left."""
    for step, left in ((5, None), (40, 80)):
        ev = {"event": "step", "step": step, "loss": 0.5, "lr": 1e-4, "elapsed": 30.0,
              **({} if left is None else {"left": left})}
        widget.events.append(ev)
        widget._on_event(ev)
    assert widget.status.text() == "training: step 40, about 80 s of training left, then the new model is scored"


def test_finetune_promote_and_live_events(qtbot, widget, project: Path) -> None:
    from qtpy.QtCore import QTimer

    widget.extra_args = ["--steps", "3"]
    # before a run the plot's place says what will be drawn there (it was bare axes from 0 to 1)
    assert "drawn here" in widget.ax.texts[0].get_text() and not widget.ax.axison and not widget.ax.lines
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    proc = widget.start()
    assert "the old model is scored first" in widget.ax.texts[0].get_text()
    with qtbot.waitSignal(proc.finished, timeout=240_000):
        pass
    timer.stop()
    assert len(ticks) > 10
    kinds = [e["event"] for e in widget.events]
    assert "plan" in kinds and "baseline" in kinds and kinds.count("step") >= 3 and kinds[-1] == "finished"
    assert widget.ax.lines and len(widget.ax.lines[0].get_xdata()) >= 3  # the live plot
    # two corrections, none held out: the Dice axis says its points are in-sample, and both
    # axis labels are drawn inside the canvas, not cut off below or to the right of it
    assert widget.figure.axes[-1].get_ylabel() == "quick Dice, in-sample"
    widget.canvas.draw()
    renderer = widget.canvas.get_renderer()
    assert widget.ax.xaxis.label.get_window_extent(renderer).y0 >= 0
    right = widget.figure.axes[-1].yaxis.label.get_window_extent(renderer)
    assert right.x1 <= widget.figure.bbox.width
    assert right.y0 >= 0 and right.y1 <= widget.figure.bbox.height  # not cut off at the top (a long label was)
    assert all(float(t).is_integer() for t in widget.ax.get_xticks())
    assert "eval" in kinds  # validation during training, not only at the end
    assert "old -> new" in widget.scores.text() and widget.promote_button.enabled
    reg = Registry(project)
    new = widget.new_version.name
    assert new in reg.versions() and reg.active().name == "tiny"  # not active until promoted
    widget.promote(anyway=True)  # a 3-step tiny model may score worse
    assert reg.active().name == new
    # side by side on a photo: old mask on it, new mask on a copy to its right
    widget.viewer.open_sample("napari-lesionseg", "idrid_16")
    worker = widget.compare()
    qtbot.waitUntil(lambda: widget.compare_button.enabled, timeout=120_000)
    names = [ly.name for ly in widget.viewer.layers]
    assert any(n.startswith("IDRiD_16 old model") for n in names)
    right = next(ly for ly in widget.viewer.layers if ly.name.startswith("IDRiD_16 new model"))
    assert right.translate[-1] > 2144 and worker is not None
    # any version can be made active again
    widget.versions.value = "tiny"
    assert widget.make_active().name == "tiny"
    widget.versions.value = "default (shipped)"
    assert widget.make_active().name == "default" and reg.active().name == "default"


def test_discard_keeps_a_copy(qtbot, widget, project: Path) -> None:
    widget.extra_args = ["--steps", "2"]
    proc = widget.start()
    with qtbot.waitSignal(proc.finished, timeout=240_000):
        pass
    name = widget.new_version.name
    dest = widget.discard()
    assert dest is not None and dest.exists() and name not in Registry(project).versions()
    assert Registry(project).active().name == "tiny"


def test_cancel_and_failure_leave_the_active_model(qtbot, widget, project: Path) -> None:
    widget.extra_args = ["--steps", "500"]
    proc = widget.start()
    qtbot.wait(1500)
    widget.cancel()
    with qtbot.waitSignal(proc.finished, timeout=30_000):
        pass
    assert "cancelled" in widget.status.text()
    assert Registry(project).versions() == ["tiny"] and Registry(project).active().name == "tiny"
    weights = project / "models" / "tiny" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the base model got damaged on disk: the subprocess refuses it
    weights.write_bytes(bytes(data))
    widget.extra_args = ["--steps", "2"]
    proc = widget.start()
    with qtbot.waitSignal(proc.finished, timeout=120_000):
        pass
    assert "fine-tuning failed" in widget.status.text() and "sha256" in widget.status.text()
    assert Registry(project).active().name == "tiny" and widget.start_button.enabled


def test_killed_training_process_is_reported(qtbot, widget, project: Path) -> None:
    """The out-of-memory killer's SIGKILL, simulated: napari keeps running, nothing changes."""
    import os
    import signal

    widget.extra_args = ["--steps", "500"]
    proc = widget.start()
    qtbot.waitUntil(lambda: any(e.get("event") == "step" for e in widget.events), timeout=120_000)
    os.kill(int(proc.processId()), signal.SIGKILL)
    with qtbot.waitSignal(proc.finished, timeout=30_000):
        pass
    assert "killed or ran out of memory" in widget.status.text()
    assert Registry(project).versions() == ["tiny"] and Registry(project).active().name == "tiny"
    assert widget.start_button.enabled


def test_closing_the_dock_stops_fine_tuning_and_leaves_nothing(qtbot, widget, project: Path) -> None:
    """Closing Fine-tune mid-run once let the process finish, write a new version and leave a
    55 MB run folder."""
    widget.extra_args = ["--steps", "2000"]
    proc = widget.start()
    qtbot.waitUntil(lambda: any(e.get("event") == "baseline" for e in widget.events), timeout=240_000)
    before = set(Registry(project).versions())
    widget.viewer.window.remove_dock_widget(widget)  # what the dock's close button does
    from qtpy.QtCore import QProcess

    assert proc.state() == QProcess.NotRunning
    assert set(Registry(project).versions()) == before
    assert not [p for p in (project / "models").iterdir() if p.name.startswith(".") or p.name.endswith(".run")]


def test_closing_napari_stops_fine_tuning_and_leaves_nothing(qtbot, widget, project: Path) -> None:
    """Closing napari itself (not the dock) mid-run: the training process ends, no version and
    no run folder are left."""
    import os
    import time

    widget.extra_args = ["--steps", "2000"]
    proc = widget.start()
    qtbot.waitUntil(lambda: any(e.get("event") == "baseline" for e in widget.events), timeout=240_000)
    pid = int(proc.processId())
    before = set(Registry(project).versions())
    widget.viewer.close()
    end = time.time() + 10
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # ended, not yet reaped
            break
        time.sleep(0.05)
    else:
        pytest.fail("the training process outlived napari")
    assert set(Registry(project).versions()) == before
    assert not [p for p in (project / "models").iterdir() if p.name.startswith(".") or p.name.endswith(".run")]


def _finish_with(widget, project: Path, plan: dict, old: float, new: float, best_step: int = 30) -> Path:
    """The widget's state after a fine-tune whose events were ``plan`` and a finish with
    these Dice/AUPR scores (the process itself is exercised above)."""
    version = Registry(project).new_version_path()
    shutil.copytree(project / "models" / "tiny", version)
    widget.events = [{"event": "plan", **plan},
                     {"event": "finished", "model": str(version), "steps": 60, "best_step": best_step,
                      **{f"old_{k}": old for k in ("aupr", "dice_ds")},
                      **{f"new_{k}": new for k in ("aupr", "dice_ds")}, "old_recall_ds": 0.5, "new_recall_ds": 0.5,
                      "old_precision_ds": 0.5, "new_precision_ds": 0.5}]
    widget.new_version = version
    widget._on_finished(0, None)
    return version


def test_a_worse_version_needs_a_second_click_to_promote(widget, project: Path) -> None:
    version = _finish_with(widget, project, {"train": ["a", "b", "c"], "val": ["d"]}, old=0.60, new=0.55)
    assert "WORSE" in widget.status.text() and "dice_ds 0.600 -> 0.550" in widget.status.text()
    assert "on 1 held-out photo(s) (d)" in widget.scores.text()
    reg = Registry(project)
    assert widget.promote() is None and reg.active().name == "tiny"  # first click: a warning only
    assert widget.promote_button.text == "Promote anyway"
    widget.promote_button.native.click()
    assert reg.active().name == version.name


def test_a_better_version_promotes_at_once_and_in_sample_scores_say_so(widget, project: Path) -> None:
    version = _finish_with(widget, project, {"train": ["a", "b"], "val": ["a", "b"]}, old=0.50, new=0.60)
    assert "WORSE" not in widget.status.text()
    assert "on the 2 photo(s) it trained on" in widget.scores.text() and "optimistic" in widget.scores.text()
    widget.promote_button.native.click()
    assert Registry(project).active().name == version.name


def test_promote_goes_to_the_project_the_version_was_made_in(widget, project: Path, tmp_path: Path) -> None:
    """The project field changed after a fine-tune (another project chosen, or a path typed):
    Promote looked for the version in that other project and raised."""
    version = _finish_with(widget, project, {"train": ["a", "b"], "val": ["a", "b"]}, old=0.50, new=0.60)
    other = tmp_path / "another project"
    widget.project_edit.setText(str(other))
    widget.promote_button.native.click()
    assert Registry(project).active().name == version.name
    assert not (other / "models" / "active.json").exists()
    # nor do the docks take it up in the other project (Segment ran it there, said "of this project")
    assert widget.session.model_path() != Registry(project).active()
    assert "of the project" in widget.status.text() and "not of the project set now" in widget.status.text()


def test_a_fine_tune_that_kept_the_old_weights_says_so(widget, project: Path) -> None:
    """No checkpoint beat the base model on the held-out photo: the version is the old weights,
    and the widget says that rather than offering it as an improvement."""
    _finish_with(widget, project, {"train": ["a", "b", "c"], "val": ["d"]}, old=0.60, new=0.60, best_step=0)
    text = widget.status.text()
    assert "keeps the old weights" in text and "on 1 held-out photo(s) (d)" in text and "WORSE" not in text
    assert "nothing to promote" in text
    # promoting it would change the active model's name only: the button is off, discarding is offered
    assert not widget.promote_button.enabled and widget.discard_button.enabled
    assert widget.promote() is None and Registry(project).active().name == "tiny"
    widget.discard_button.native.click()
    assert widget.new_version is None
    from napari_lesionseg._qt.finetune import dice_axis_label

    # the live plot's axis: which photos, and that it is the loop's quick check, not the final scores
    assert dice_axis_label({"train": ["a", "b", "c"], "val": ["d"]}) == "quick Dice, 1 held-out"
    assert "full-size" in widget.canvas.toolTip()
    # the next fine-tune that does improve can be promoted again
    version = _finish_with(widget, project, {"train": ["a", "b", "c"], "val": ["d"]}, old=0.50, new=0.60)
    assert widget.promote_button.enabled
    widget.promote_button.native.click()
    assert Registry(project).active().name == version.name


def test_the_dock_follows_the_project_as_it_changes(make_napari_viewer, qtbot, small_pairs: Path,
                                                    tiny_model_dir: Path, tmp_path: Path) -> None:
    """The project set in Segment lesions left Fine-tune's count blank until its own field was
    edited or Fine-tune pressed; corrections saved afterwards, and versions made or promoted
    by `lesionseg finetune/models` in a terminal, were not shown until then either."""
    import subprocess
    import sys

    from helpers import corrected_project

    proj = corrected_project(tmp_path / "proj", small_pairs)
    viewer = make_napari_viewer()
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    seg.project_edit.setText(str(proj.root))
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Fine-tune model")
    assert "1 corrected image(s)" in w.preflight_label.text()
    iid = proj.add_image(small_pairs / "images" / "IDRiD_16.jpg")  # saved by another dock or napari
    proj.save_label(iid, read_mask(small_pairs / "masks" / "IDRiD_16_HE.png"))
    qtbot.waitUntil(lambda: "2 corrected image(s)" in w.preflight_label.text(), timeout=5000)
    for name in ("v1", "v2"):  # versions a terminal's `lesionseg finetune --project` made
        shutil.copytree(tiny_model_dir, proj.root / "models" / name)
    qtbot.waitUntil(lambda: w.versions.choices == ("default (shipped)", "v1", "v2"), timeout=5000)
    assert w.versions.value == "default (shipped)" and w.session.model_path() != proj.root / "models" / "v1"

    def models(*args: str) -> None:
        r = subprocess.run([sys.executable, "-m", "napari_lesionseg.cli", "models", "--project", str(proj.root), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr

    models("--promote", "v1")  # the list and the session follow the active model they showed
    qtbot.waitUntil(lambda: w.versions.value == "v1" and "base model: v1" in w.preflight_label.text(), timeout=5000)
    assert w.session.model_path() == proj.root / "models" / "v1"
    w.versions.value = "v2"  # the annotator's pick stays while it exists
    proj.save_label(iid, read_mask(small_pairs / "masks" / "IDRiD_16_HE.png"))
    qtbot.wait(600)
    assert w.versions.value == "v2"
    models("--use-default")
    models("--discard", "v2")
    qtbot.waitUntil(lambda: w.versions.choices == ("default (shipped)", "v1"), timeout=5000)
    assert w.versions.value == "default (shipped)"
    assert w.session.model_path() != proj.root / "models" / "v1"  # followed back to the default
    proj.root.rename(tmp_path / "moved")  # in a file manager: at the next refresh said, and not made again
    w.refresh()
    assert "no longer there" in w.preflight_label.text() and not proj.root.exists()
