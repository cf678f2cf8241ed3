"""The corrections store: append-only versions, provenance, crash safety (SIGKILL at random
moments) and concurrent savers."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_lesionseg.core.bundled import sample_paths
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.image_io import encode_png, read_mask
from napari_lesionseg.core.store import Project


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Project, str]:
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(sample_paths("idrid_16")[0])
    return proj, iid


def _label(k: int, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    rng = np.random.default_rng(k)
    lab = (rng.random(shape) > 0.9).astype(np.uint8)
    lab[: k % 7] = 255
    return lab


def test_versions_append_and_latest_reloads(project) -> None:
    proj, iid = project
    model_mask = np.zeros((60, 80), np.uint8)
    v1 = proj.save_label(iid, _label(1), model_version="default", model_mask=model_mask)
    v2 = proj.save_label(iid, _label(2), model_version="default", model_mask=model_mask)
    assert (v1.version, v2.version) == (1, 2) and v1.path.name == "v0001.png"
    np.testing.assert_array_equal(read_mask(v1.path), _label(1))  # the first is untouched
    np.testing.assert_array_equal(proj.latest_label(iid), _label(2))
    assert Project(proj.root).latest(iid).version == 2  # reopening finds the latest
    recs = proj.manifest()
    assert [r["version"] for r in recs] == [1, 2]
    r = recs[1]
    assert r["image_sha256"] == hashlib.sha256(sample_paths("idrid_16")[0].read_bytes()).hexdigest()
    assert r["model_version"] == "default" and r["edited_px"] == int((_label(2) == 1).sum())
    assert r["dice_model_vs_corrected"] == 0.0 and r["unsure_px"] == int((_label(2) == 255).sum())
    pairs = proj.corrected_pairs()
    assert [(p.id, p.mask.name) for p in pairs] == [(iid, "v0002.png")]


def test_adding_images(project, tmp_path: Path) -> None:
    proj, iid = project
    assert proj.add_image(sample_paths("idrid_16")[0]) == iid  # same photo: same id
    other = tmp_path / "IDRiD_16.jpg"
    other.write_bytes(sample_paths("idrid_04")[0].read_bytes())
    with pytest.raises(LesionsegInputError, match="different image"):
        proj.add_image(other)
    ref = proj.add_image(sample_paths("idrid_04")[0], copy=False)
    assert proj.image_path(ref) == sample_paths("idrid_04")[0].resolve()
    assert proj.image_ids() == ["IDRiD_04", "IDRiD_16"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    with pytest.raises(LesionsegInputError, match="empty"):
        proj.add_image(bad)
    assert proj.image_ids() == ["IDRiD_04", "IDRiD_16"]


def test_bad_labels_refused(project) -> None:
    proj, iid = project
    with pytest.raises(LesionsegInputError, match="0, 1 or 255"):
        proj.save_label(iid, np.full((4, 4), 7, np.uint8))
    with pytest.raises(LesionsegInputError, match="add it first"):
        proj.save_label("nope", np.zeros((4, 4), np.uint8))
    assert proj.versions(iid) == []


def test_torn_manifest_line_is_skipped_and_next_save_survives(project) -> None:
    proj, iid = project
    proj.save_label(iid, _label(1))
    with open(proj.root / "manifest.jsonl", "ab") as fh:
        fh.write(b'{"time": "2026-01-01", "image_id": "IDR')  # a crash mid-append
    proj.save_label(iid, _label(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = proj.manifest()
    assert [r["version"] for r in recs] == [1, 2]
    assert any("damaged" in str(w.message) for w in caught)


def test_temp_files_are_not_versions(project) -> None:
    proj, iid = project
    proj.save_label(iid, _label(1))
    d = proj.root / "labels" / iid
    (d / ".v0002.png.abc.tmp").write_bytes(b"half a png")
    (d / "latest.json").write_text("{broken")
    assert [v.version for v in proj.versions(iid)] == [1]
    assert proj.latest(iid).version == 1
    assert proj.save_label(iid, _label(2)).version == 2


def _saver(root: Path, iid: str, start: int, count: int | None, pipe_w: int) -> None:
    """Child: save labels forever (or ``count`` times), reporting each finished save."""
    proj = Project(root)
    k = start
    while count is None or k < start + count:
        lab = _label(k)
        v = proj.save_label(iid, lab)
        os.write(pipe_w, f"{v.version} {hashlib.sha256(encode_png(lab)).hexdigest()}\n".encode())
        k += 1
    os._exit(0)


def _fork_saver(root: Path, iid: str, start: int, count: int | None) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            _saver(root, iid, start, count, w)
        finally:
            os._exit(1)
    os.close(w)
    return pid, r


def _read_all(fd: int) -> list[tuple[int, str]]:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    lines = b"".join(chunks).decode().splitlines()
    return [(int(a), b) for a, b in (ln.split() for ln in lines if ln.count(" ") == 1)]


def test_sigkill_while_saving_loses_nothing(tmp_path: Path) -> None:
    """50 kills at random moments; every version reported saved reads back bit-exact."""
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(sample_paths("idrid_16")[0])
    rng = random.Random(1234)
    saved: dict[int, str] = {}
    t0 = time.time()
    trials = 50
    for trial in range(trials):
        pid, fd = _fork_saver(proj.root, iid, start=trial * 1000, count=None)
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for version, sha in _read_all(fd):
            saved[version] = sha
        # after every kill: all earlier saves intact, manifest readable, temp files ignored
        versions = {v.version: v for v in proj.versions(iid)}
        for version, sha in saved.items():
            data = versions[version].path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha, f"version {version} changed after kill {trial}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recs = proj.manifest()
        assert {r["version"] for r in recs} >= set(saved)
        assert proj.latest(iid) is not None
    assert len(saved) >= 20  # the saver got real work done between kills
    assert time.time() - t0 < 60


def test_two_processes_saving_at_once_lose_nothing(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(sample_paths("idrid_16")[0])
    kids = [_fork_saver(proj.root, iid, start=s, count=15) for s in (0, 500)]
    reported = []
    for pid, fd in kids:
        reported += _read_all(fd)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(v for v, _ in reported) == list(range(1, 31))
    assert [v.version for v in proj.versions(iid)] == list(range(1, 31))
    assert len(proj.manifest()) == 30
    for v, sha in reported:
        assert hashlib.sha256((proj.root / "labels" / iid / f"v{v:04d}.png").read_bytes()).hexdigest() == sha
    assert json.loads((proj.root / "labels" / iid / "latest.json").read_text())["version"] == 30
