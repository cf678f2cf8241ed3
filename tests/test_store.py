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


def test_review_decisions_are_kept_with_their_version(project) -> None:
    """The Review dock's decisions (an accepted lesion paints nothing) are saved with the
    version, read back with it; a decision outside the map or with an unknown status is not
    kept, a damaged one read back is passed over with a warning, not an error."""
    proj, iid = project
    plain = proj.save_label(iid, _label(1))
    assert not plain.path.with_suffix(".json").exists() and proj.review_marks(plain) == {}  # as before
    marks = {("HE", 3, 4): "accepted", ("HE", 10, 70): "deleted", ("MA", 59, 0): "unsure",
             ("HE", 60, 0): "accepted", ("HE", 1, 1): "maybe"}  # off the 60x80 map; no such status
    v = proj.save_label(iid, _label(2), marks=marks)
    assert proj.review_marks(v) == {k: marks[k] for k in [("HE", 3, 4), ("HE", 10, 70), ("MA", 59, 0)]}
    assert proj.label_types(v) == ("HE",) and proj.manifest()[-1]["review_decisions"] == 3
    f = v.path.with_suffix(".json")
    f.write_text(json.dumps({"types": ["HE"], "review": [["HE", 3, 4, "accepted"], ["HE", -1, "x", "deleted"]]}))
    with pytest.warns(UserWarning, match="review decision"):
        assert proj.review_marks(v) == {("HE", 3, 4): "accepted"}
    # a save killed between its json and its png left v0003.json: the next save (hemorrhages
    # only, no decisions: no json of its own) took that save's types and decisions as its own
    (v.path.parent / "v0003.json").write_text(json.dumps({"types": ["HE", "MA"], "review": [["HE", 1, 1, "deleted"]]}))
    v3 = proj.save_label(iid, _label(3))
    assert v3.version == 3 and proj.label_types(v3) == ("HE",) and proj.review_marks(v3) == {}


def test_adding_images(project, tmp_path: Path) -> None:
    proj, iid = project
    assert proj.add_image(sample_paths("idrid_16")[0]) == iid  # same photo: same id
    other = tmp_path / "IDRiD_16.jpg"  # another photo under a taken name (two cameras' IMG_0001.JPG)
    other.write_bytes(sample_paths("idrid_04")[0].read_bytes())
    assert proj.find_image(other) is None
    assert proj.add_image(other) == "IDRiD_16-2"
    assert proj.add_image(other) == "IDRiD_16-2" and proj.find_image(other) == "IDRiD_16-2"
    assert proj.find_image(sample_paths("idrid_16")[0]) == iid
    with pytest.raises(LesionsegInputError, match="different image"):  # an id asked for is never reassigned
        proj.add_image(other, image_id=iid)
    ref = proj.add_image(sample_paths("idrid_04")[0], copy=False)
    assert proj.image_path(ref) == sample_paths("idrid_04")[0].resolve()
    assert proj.image_ids() == ["IDRiD_04", "IDRiD_16", "IDRiD_16-2"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    with pytest.raises(LesionsegInputError, match="empty"):
        proj.add_image(bad)
    assert proj.image_ids() == ["IDRiD_04", "IDRiD_16", "IDRiD_16-2"]


def test_names_in_any_script_name_the_photos_and_a_project_made_before_keeps_its_ids(tmp_path: Path) -> None:
    """Ids kept ASCII letters only: a clinic's 患者一/OD.jpg and 患者二/OD.jpg became OD and
    OD-2 (which patient?), Müller/OD.jpg M_ller_OD. Letters of any script are kept now (NFC,
    so a name typed decomposed is the same id), at most 120 bytes (long folder names could
    not be written); a project made under the old rule still finds its photos and their
    corrections under the old ids, and adds none of them again."""
    import shutil
    import unicodedata

    photos = [sample_paths("idrid_04")[0], sample_paths("idrid_16")[0]]
    clinic = tmp_path / "clinic"
    for folder, photo in zip(("患者一", "患者二"), photos):
        (clinic / folder).mkdir(parents=True)
        shutil.copy(photo, clinic / folder / "OD.jpg")
    proj = Project(tmp_path / "new")
    assert [proj.add_image(clinic / f / "OD.jpg", folder=f) for f in ("患者一", "患者二")] == ["患者一_OD", "患者二_OD"]
    assert proj.image_ids() == ["患者一_OD", "患者二_OD"]
    decomposed = unicodedata.normalize("NFD", "Müller")  # as macOS's HFS+ gives folder names
    (clinic / decomposed).mkdir()
    shutil.copy(photos[0], clinic / decomposed / "OS.jpg")
    assert proj.add_image(clinic / decomposed / "OS.jpg", folder=decomposed) == unicodedata.normalize("NFC", "Müller_OS")
    # a project made before: the ids the ASCII rule made, a correction saved under one
    old = Project(tmp_path / "old")
    assert old.add_image(clinic / "患者一" / "OD.jpg", image_id="OD") == "OD"
    assert old.add_image(clinic / "患者二" / "OD.jpg", image_id="OD-2") == "OD-2"
    old.save_label("OD-2", _label(3))
    for folder, iid in (("患者一", "OD"), ("患者二", "OD-2")):
        assert old.find_image(clinic / folder / "OD.jpg") == iid
        assert old.add_image(clinic / folder / "OD.jpg", folder=folder) == iid  # not added again
    assert old.image_ids() == ["OD", "OD-2"] and np.array_equal(old.latest_label("OD-2"), _label(3))
    # folder names too long for a file name (3 bytes a CJK letter): "File name too long" at the first write
    deep = clinic / ("患" * 80) / ("visit " * 30) / ("ab" * 100)
    deep.mkdir(parents=True)
    shutil.copy(photos[1], deep / "OD.jpg")
    iid = proj.add_image(deep / "OD.jpg", folder=str(deep.relative_to(clinic)))
    assert len(iid.encode()) <= 120 and iid.startswith("患患") and iid.endswith("abab_OD")
    assert proj.find_image(deep / "OD.jpg") == iid and proj.image_path(iid).is_file()
    long_ascii = tmp_path / ("x" * 150 + ".jpg")  # an id the old rule made longer than today's limit
    shutil.copy(photos[1], long_ascii)
    shutil.copy(long_ascii, old.root / "images" / long_ascii.name)  # as the old rule kept it
    assert old.find_image(long_ascii) == old.add_image(long_ascii) == "x" * 150
    legacy = old.add_pixels(np.zeros((8, 8, 3), np.uint8), "M_ller", image_id="M_ller")
    assert old.find_pixels(np.zeros((8, 8, 3), np.uint8), "Müller") == legacy == "M_ller"
    assert old.add_pixels(np.zeros((8, 8, 3), np.uint8), "Müller") == "M_ller"


def test_a_photo_in_a_format_the_project_does_not_list_is_kept_as_its_pixels(project, tmp_path: Path) -> None:
    """A WebP napari opens was copied as ``images/<id>.webp``, which the project does not list:
    the correction could not be saved ("no image with id ...; add it first") and the copy was
    left behind. It is kept as a lossless PNG, identified by the WebP's own bytes."""
    from PIL import Image

    from napari_lesionseg.core.image_io import read_image

    proj, _ = project
    rgb = read_image(sample_paths("idrid_04")[0])[0][::8, ::8]
    webp = tmp_path / "photo.webp"
    Image.fromarray(rgb).save(webp, lossless=True)
    iid = proj.add_image(webp)
    assert iid == "photo" and proj.image_path(iid) == proj.root / "images" / "photo.png"
    np.testing.assert_array_equal(read_image(proj.image_path(iid))[0], rgb)
    assert proj.add_image(webp) == iid and proj.find_image(webp) == iid  # found again by the WebP
    proj.save_label(iid, np.zeros(rgb.shape[:2], np.uint8))
    assert proj.manifest()[-1]["image_sha256"] == hashlib.sha256(webp.read_bytes()).hexdigest()
    assert proj.image_ids() == ["IDRiD_16", "photo"]


def test_pixels_with_no_file_are_kept_and_found_again(project) -> None:
    """A napari layer made in memory, or read by another plugin (DICOM): its pixels are what
    the project keeps; the same pixels under the same name give the same id, others a new one."""
    from napari_lesionseg.core.image_io import read_image

    proj, _ = project
    rgb = np.ascontiguousarray(read_image(sample_paths("idrid_04")[0])[0][::8, ::8])
    assert proj.find_pixels(rgb, "scan 1") is None
    iid = proj.add_pixels(rgb, "scan 1")
    assert iid == "scan_1" and proj.add_pixels(rgb.copy(), "scan 1") == iid
    assert proj.find_pixels(rgb.copy(), "scan 1") == iid
    np.testing.assert_array_equal(read_image(proj.image_path(iid))[0], rgb)
    other = rgb.copy()
    other[0, 0] ^= 1
    assert proj.find_pixels(other, "scan 1") is None and proj.add_pixels(other, "scan 1") == "scan_1-2"
    assert proj.add_pixels(rgb[:, :-1], "scan 1") == "scan_1-3"  # same bytes' prefix, another size
    with pytest.raises(LesionsegInputError, match="RGB uint8"):
        proj.add_pixels(rgb[..., 0], "gray")
    # an interrupted add left the identity without the PNG: a later photo of that name is itself
    (proj.root / "images" / "IDRiD_04.origin.json").write_text(json.dumps({"origin": "x", "sha256": "0" * 64}))
    assert proj.add_image(sample_paths("idrid_04")[0]) == "IDRiD_04"
    assert proj.find_image(sample_paths("idrid_04")[0]) == "IDRiD_04"


def test_bad_labels_refused(project) -> None:
    proj, iid = project
    with pytest.raises(LesionsegInputError, match="label values must be 0"):
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


def test_labels_round_trip_exactly_even_without_lesion(project) -> None:
    """A correction holding only 0 and 255 (unsure) once came back as 0/1: unsure read as lesion."""
    proj, iid = project
    lab = np.zeros((60, 80), np.uint8)
    lab[10:30, 10:30] = 255
    proj.save_label(iid, lab)
    np.testing.assert_array_equal(proj.latest_label(iid), lab)
    (pair,) = proj.corrected_pairs()
    got = pair.read_mask()
    assert int((got == 1).sum()) == 0 and int((got == 255).sum()) == 400
    for values in ([0, 1], [0, 1, 255], [1, 255], [255], [0]):
        lab = np.resize(np.array(values, np.uint8), 60).repeat(80).reshape(60, 80)
        proj.save_label(iid, lab)
        np.testing.assert_array_equal(proj.latest_label(iid), lab)
    assert proj.manifest()[0]["unsure_px"] == 400 and proj.manifest()[0]["lesion_px"] == 0


@pytest.mark.parametrize("bad", [np.full((4, 4), 256, np.int64), np.full((4, 4), -1, np.int32),
                                 np.full((4, 4), 0.7, np.float32), np.full((4, 4), 5, np.uint16)])
def test_label_values_are_checked_before_any_cast(project, bad) -> None:
    proj, iid = project
    with pytest.raises(LesionsegInputError, match="label values must be 0"):
        proj.save_label(iid, bad)
    assert proj.versions(iid) == []


def test_labels_of_other_dtypes_are_taken_when_their_values_are_right(project) -> None:
    proj, iid = project
    for lab in (np.eye(4, dtype=bool), np.eye(4, dtype=np.int64) * 255, np.eye(4, dtype=np.float64)):
        proj.save_label(iid, lab)
        np.testing.assert_array_equal(proj.latest_label(iid), np.asarray(lab).astype(np.uint8))


def test_latest_is_the_newest_version_whatever_latest_json_says(project) -> None:
    proj, iid = project
    proj.save_label(iid, _label(1))
    proj.save_label(iid, _label(2))
    (proj.root / "labels" / iid / "latest.json").write_text('{"version": 1, "file": "v0001.png"}')
    assert proj.latest(iid).version == 2  # a kill between the version and latest.json once left it lagging
    np.testing.assert_array_equal(proj.latest_label(iid), _label(2))


def test_versions_without_a_manifest_line_are_recovered_on_opening(project) -> None:
    proj, iid = project
    proj.save_label(iid, _label(1))
    proj.save_label(iid, _label(2))
    lines = (proj.root / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    (proj.root / "manifest.jsonl").write_bytes(lines[0])  # as if killed between version and manifest
    reopened = Project(proj.root)
    assert [v.version for v in reopened.recovered] == [2]
    recs = reopened.manifest()
    assert [r["version"] for r in recs] == [1, 2] and recs[1]["recovered"] is True
    assert recs[1]["label_sha256"] == hashlib.sha256((proj.root / "labels" / iid / "v0002.png").read_bytes()).hexdigest()
    assert Project(proj.root).recovered == []  # once


def test_stale_temp_files_are_removed_on_opening(project) -> None:
    proj, iid = project
    proj.save_label(iid, _label(1))
    leftovers = [proj.root / "images" / ".IDRiD_16.jpg.x1.tmp", proj.root / "labels" / iid / ".v0002.png.x2.tmp",
                 proj.root / "predictions" / "m" / ".IDRiD_16_prob.png.x3.tmp", proj.root / ".manifest.x.tmp"]
    for f in leftovers:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"half")
    folder = proj.root / "models" / ".v2.abc.tmp"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"half")
    fresh = proj.root / "labels" / iid / ".v0003.png.x4.tmp"  # another process's write in progress
    fresh.write_bytes(b"writing")
    old = time.time() - 3600
    for f in [*leftovers, folder]:
        os.utime(f, (old, old))
    Project(proj.root)
    assert not any(f.exists() for f in [*leftovers, folder])
    assert fresh.exists()


def _add_in_child(root: Path, photo: Path, go: float) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            while time.time() < go:
                pass
            Project(root).add_image(photo)
            code = 0
        except LesionsegInputError:
            code = 3
        finally:
            os._exit(code)
    return pid


def test_photos_from_patient_folders_are_named_by_their_folders(tmp_path: Path) -> None:
    """A clinic's folders hold one OD.jpg (right eye) and OS.jpg per patient: a batch over
    them (``folder``) names them ``p1_OD``, ``p2_OD``, ``p2_visit_2_OD``, not ``OD``, ``OD-2``,
    ``OD-3`` (which patient?). The same photo opened on its own later (the plugin: no batch)
    is found under that id, and a photo a project already holds under its stem keeps it."""
    photos = {}
    for rel, sample in (("p1", "idrid_04"), ("p2", "idrid_16"), ("p2/visit 2", "idrid_04")):
        (tmp_path / "clinic" / rel).mkdir(parents=True)
        photos[rel] = tmp_path / "clinic" / rel / "OD.jpg"
        photos[rel].write_bytes(sample_paths(sample)[0].read_bytes())
    photos["p2/visit 2"].write_bytes(photos["p2/visit 2"].read_bytes() + b"\0")  # another photo
    proj = Project(tmp_path / "proj")
    assert [proj.add_image(photos[k], folder=k) for k in photos] == ["p1_OD", "p2_OD", "p2_visit_2_OD"]
    assert [proj.add_image(photos[k]) for k in photos] == ["p1_OD", "p2_OD", "p2_visit_2_OD"]
    assert [proj.find_image(photos[k]) for k in photos] == ["p1_OD", "p2_OD", "p2_visit_2_OD"]
    assert proj.image_ids() == ["p1_OD", "p2_OD", "p2_visit_2_OD"]
    older = Project(tmp_path / "older")  # photos added by their stem before (the plugin, or an earlier batch)
    assert [older.add_image(photos[k]) for k in photos] == ["OD", "OD-2", "OD-3"]
    assert [older.add_image(photos[k], folder=k) for k in photos] == ["OD", "OD-2", "OD-3"]
    assert older.image_ids() == ["OD", "OD-2", "OD-3"]


def test_concurrent_add_image_of_two_photos_with_one_id(tmp_path: Path) -> None:
    """Two processes adding different photos with the same stem: both are kept, under two ids
    (before the lock, in 16 of 20 trials one photo silently replaced the other)."""
    a, b = tmp_path / "a" / "IDRiD_16.jpg", tmp_path / "b" / "IDRiD_16.jpg"
    for dst, key in ((a, "idrid_16"), (b, "idrid_04")):
        dst.parent.mkdir()
        dst.write_bytes(sample_paths(key)[0].read_bytes())
    for trial in range(8):
        root = tmp_path / f"proj{trial}"
        Project(root)
        go = time.time() + 0.3
        pids = [_add_in_child(root, a, go), _add_in_child(root, b, go)]
        codes = sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
        assert codes == [0, 0], f"trial {trial}: exit codes {codes}"
        proj = Project(root)
        assert proj.image_ids() == ["IDRiD_16", "IDRiD_16-2"]
        stored = {proj.image_path(i).read_bytes() for i in proj.image_ids()}
        assert stored == {a.read_bytes(), b.read_bytes()}, f"trial {trial}"


def test_sigkill_while_adding_images_and_saving_predictions(tmp_path: Path) -> None:
    """Kills during add_image and save_prediction leave either nothing or complete files."""
    rng = random.Random(7)
    prob = np.random.default_rng(0).random((300, 400)).astype(np.float32)
    for trial in range(12):
        root = tmp_path / f"p{trial}"
        Project(root)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                proj = Project(root)
                iid = proj.add_image(sample_paths("idrid_16")[0])
                for k in range(1000):
                    proj.save_prediction(iid, f"m{k % 3}", prob, prob > 0.5, prob)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        proj = Project(root)
        for f in (root / "images").iterdir():
            if not f.name.startswith("."):
                assert f.read_bytes() == sample_paths("idrid_16")[0].read_bytes()
        for d in (root / "predictions").iterdir():
            for f in d.glob("*.png"):
                if not f.name.startswith("."):
                    assert read_mask(f).shape == (300, 400) if f.name.endswith("_mask.png") else True
