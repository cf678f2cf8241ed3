"""Several outputs in one model (HE first, then MA, EX, SE, OD): configs, type masks, the
sampler, the loss, training and the model folder it writes; on the bundled samples' real masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_here
from lesionseg_training.data import PatchSampler, Prepared, prepare_pair
from lesionseg_training.losses import multi_output_loss, supervised_loss
from lesionseg_training.train_config import AugmentConfig, DataConfig, LossConfig, load_config
from lesionseg_training.trainer import train
from napari_lesionseg.core.dataclass_io import ConfigError, from_dict
from napari_lesionseg.core.lesion_types import parse_types
from napari_lesionseg.core.model_config import ModelConfig, PreprocessConfig
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.models.network_config import NetworkConfig
from napari_lesionseg.core.pairs import match_pairs

ALL = ["HE", "MA", "EX", "SE", "OD"]


@pytest.fixture()
def small_rgb(sample_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(sample_rgb[::4, ::4])  # 536 x 356


def test_outputs_start_with_hemorrhages_and_name_known_types() -> None:
    assert NetworkConfig().outputs == ["HE"]  # every folder written before other types existed
    net = build_model(NetworkConfig(widths=[4, 8], outputs=ALL))
    assert net(torch.zeros(1, 4, 32, 32)).logits.shape == (1, 5, 32, 32)
    for bad in (["MA", "HE"], ["HE", "XX"], ["HE", "MA", "MA"], []):
        with pytest.raises(ValueError, match="network.outputs"):
            NetworkConfig(outputs=bad)
    with pytest.raises(ConfigError, match="inference.types"):  # a threshold for an output the model lacks
        from_dict(ModelConfig, {"inference": {"types": [{"name": "OD", "threshold": 0.5}]}})
    cfg = from_dict(ModelConfig, {"network": {"outputs": ["HE", "OD"]},
                                  "inference": {"types": [{"name": "OD", "threshold": 0.4}]}})
    assert cfg.inference.for_type("OD") == (0.4, None) and cfg.inference.for_type("HE")[0] == 0.5
    assert cfg.inference.with_type("OD", 0.3, None).for_type("OD")[0] == 0.3
    assert parse_types("he, od") == ["HE", "OD"]
    with pytest.raises(ValueError, match="unknown lesion type 'XY'"):
        parse_types("HE,XY")
    with pytest.raises(ValueError, match="has no MA output"):
        parse_types("MA", available=["HE"])


def test_several_outputs_refuse_methods_defined_for_one_map() -> None:
    with pytest.raises(ConfigError, match="standard paradigm only"):
        load_config("default_dale", ['model.network.outputs=["HE","OD"]'])


def test_type_masks_are_found_beside_the_hemorrhage_mask_or_unknown(small_typed_pairs: Path,
                                                                   small_pairs: Path) -> None:
    typed = match_pairs(small_typed_pairs / "images", small_typed_pairs / "masks")
    assert [p.id for p in typed] == ["IDRiD_04", "IDRiD_16"]  # type masks are neither photos nor orphans
    p = typed[0]
    assert p.type_mask("MA").name == "IDRiD_04_MA.png" and p.type_mask("HE") == p.mask
    plain = match_pairs(small_pairs / "images", small_pairs / "masks")[0]
    assert plain.type_mask("MA") is None  # nothing says whether this photo has microaneurysms


def test_prepared_labels_hold_every_output_and_unknown_is_ignored(small_typed_pairs: Path,
                                                                   small_pairs: Path) -> None:
    pre = PreprocessConfig(fov_diameter=128, green_contrast_sigma=4.0)
    typed = match_pairs(small_typed_pairs / "images", small_typed_pairs / "masks")[1]  # IDRiD_16
    it = prepare_pair(typed, pre, outputs=ALL)
    assert it.aux is not None and it.aux.shape == (4,) + it.y.shape and it.labels().shape == (5,) + it.y.shape
    ma, ex, se, od = it.aux
    assert (od == 1).sum() > 50 and (ex == 1).any() and not (se == 1).any()  # SE: a known "none"
    assert set(np.unique(se)) == {0}
    plain = match_pairs(small_pairs / "images", small_pairs / "masks")[1]
    it2 = prepare_pair(plain, pre, outputs=ALL)
    assert (it2.aux == 255).all() and np.array_equal(it2.y, it.y)  # unknown types: ignored, HE unchanged
    assert prepare_pair(plain, pre).aux is None


def test_multi_output_loss_is_each_outputs_own_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = (torch.rand(2, 3, 8, 8) > 0.7).to(torch.uint8)
    y[:, 2] = 255  # the third type is unknown in these crops
    total, logs = multi_output_loss(logits, y, LossConfig(), ["HE", "MA", "OD"])
    parts = [supervised_loss(logits[:, t:t + 1], y[:, t], LossConfig())[0] for t in range(2)]
    torch.testing.assert_close(total, parts[0] + parts[1])
    total.backward()
    assert float(logits.grad[:, 2].abs().sum()) == 0.0  # an unknown type teaches nothing
    assert float(logits.grad[:, 1].abs().sum()) > 0.0
    assert "soft_dice_MA" in logs and "soft_dice" in logs


def test_sampler_stacks_outputs_and_centres_on_the_chosen_types() -> None:
    y = np.zeros((100, 120), np.uint8)
    aux = np.zeros((1, 100, 120), np.uint8)
    y[20, 20] = 1
    aux[0, 80, 100] = 1  # one optic-disc pixel far from the hemorrhage
    item = Prepared("a", np.ones((4, 100, 120), np.float32), y, np.ones((100, 120), bool), aux)
    quiet = AugmentConfig(brightness=0, contrast=0, gaussian_noise_sigma=0)
    cfg = DataConfig(crop_size=16, batch_size=12, lesion_crop_fraction=1.0, centre_types=["OD"], augment=quiet)
    _, yb = PatchSampler([item], cfg, seed=0, outputs=("HE", "OD")).batch()
    assert yb.shape == (12, 2, 16, 16)
    assert (yb[:, 1].reshape(12, -1).sum(1) == 1).all() and not yb[:, 0].any()  # centred on OD, not HE
    replay = Prepared("r", np.ones((4, 100, 120), np.float32), y, np.ones((100, 120), bool))  # HE only
    s = PatchSampler([item], DataConfig(crop_size=16, batch_size=8, augment=quiet), seed=1, replay=[replay],
                     replay_share=1.0, outputs=("HE", "OD"))
    xr, yr = s.batch()
    inside = xr[:, 0] != 0  # crops past the photo's edge are zero-padded
    assert yr.shape == (8, 2, 16, 16) and (yr[:, 1][inside] == 255).all()  # its other types are unknown


def test_training_several_outputs_writes_each_outputs_threshold_and_calibration(tmp_path: Path,
                                                                               small_typed_pairs: Path) -> None:
    cfg = load_config("tiny", [f'data.images="{small_typed_pairs / "images"}"',
                               f'data.masks="{small_typed_pairs / "masks"}"', "data.val_every=2",
                               f"model.network.outputs={ALL}".replace("'", '"'),
                               'data.centre_types=["HE","MA","EX","OD"]', "run.steps=4", "run.eval_every=2"])
    events = list(train(cfg, tmp_path / "run"))
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and {"val_aupr", "val_aupr_OD", "val_aupr_EX"} <= set(evals[-1])
    assert "val_aupr_SE" not in evals[-1]  # no photo shows a soft exudate: no score, no threshold
    model = load_model_folder(tmp_path / "run" / "best")
    assert model.config.network.outputs == ALL
    names = [t.name for t in model.config.inference.types]
    assert "OD" in names and "EX" in names and "SE" not in names
    assert model.config.inference.for_type("OD")[1] is not None  # calibrated on the validation photo
    cal = next(e for e in events if e["event"] == "calibrated")
    assert "platt_a_OD" in cal and "platt_a" in cal


def _multi_model(bias: dict[str, float]):
    """A tiny model with every output, each a constant logit ``bias[T]`` (weights zeroed)."""
    from helpers import TINY
    from napari_lesionseg.core.model_folder import LoadedModel

    cfg = from_dict(ModelConfig, {**TINY, "network": {**TINY["network"], "outputs": ALL},
                                  "inference": {**TINY["inference"], "types": [{"name": "EX", "threshold": 0.3}]}})
    net = build_model(cfg.network).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([bias.get(t, -6.0) for t in ALL]))
    return LoadedModel(net, cfg, None)


def test_predict_brings_every_asked_output_to_full_size_with_its_own_threshold(small_rgb: np.ndarray) -> None:
    from napari_lesionseg.core.inference import predict, run_to_end

    model = _multi_model({"HE": -6.0, "EX": -0.5, "MA": -6.0})  # EX: p = 0.38, above its 0.3, below 0.5
    pred = run_to_end(predict(model, small_rgb))
    assert set(pred.others) == {"MA", "EX", "SE", "OD"}
    ex = pred.others["EX"]
    assert ex.probability.shape == small_rgb.shape[:2] and ex.threshold == 0.3
    assert ex.mask.any() and not pred.others["MA"].mask.any() and not pred.mask.any()
    assert [les.type for les in pred.all_lesions()] == ["EX"] * len(ex.lesions) and ex.lesions
    # the OD output says "disc" everywhere: no plausible disc, so no distances, and a note saying so
    assert pred.anatomy.disc_centre is None and "optic disc" in pred.anatomy.note
    assert ex.lesions[0].od_distance_dd is None and ex.lesions[0].zone is None
    only = run_to_end(predict(model, small_rgb, types=["EX"]))
    assert set(only.others) == {"EX"}


def test_predict_cli_writes_each_type_and_locates_lesions(tmp_path: Path, small_typed_pairs: Path) -> None:
    """A model trained a few steps on the samples' real masks, through ``lesionseg predict
    --lesions``; the files, the lesion table's new columns, and the errors for types it lacks."""
    import csv
    import subprocess
    import sys

    cfg = load_config("tiny", [f'data.images="{small_typed_pairs / "images"}"',
                               f'data.masks="{small_typed_pairs / "masks"}"', "data.val_every=2",
                               'model.network.outputs=["HE","EX","OD"]', "run.steps=2", "run.eval_every=2"])
    list(train(cfg, tmp_path / "run"))
    model = tmp_path / "run" / "best"
    photo = small_typed_pairs / "images" / "IDRiD_16.jpg"

    def lesionseg(*args: object) -> subprocess.CompletedProcess:
        return run_here([sys.executable, "-m", "napari_lesionseg.cli", *map(str, args)])

    out = tmp_path / "out"
    r = lesionseg("predict", photo, "--out", out, "--model", model, "--quiet", "--lesions", "he,ex,od")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["IDRiD_16_EX_mask.png", "IDRiD_16_EX_prob.png", "IDRiD_16_OD_mask.png", "IDRiD_16_fuzzy.png",
                     "IDRiD_16_mask.png", "IDRiD_16_prob.png", "lesions.csv", "summary.csv"]
    header = (out / "lesions.csv").read_text().splitlines()[0].split(",")
    assert header[-4:] == ["type", "od_distance_dd", "zone", "field_r"]
    rows = list(csv.DictReader(open(out / "lesions.csv")))
    assert {r["type"] for r in rows} <= {"HE", "EX"}
    r = lesionseg("predict", photo, "--out", tmp_path / "o2", "--model", model, "--quiet", "--lesions", "HE,MA")
    assert r.returncode == 2 and "has no MA output" in r.stderr and "Traceback" not in r.stderr
    r = lesionseg("predict", photo, "--out", tmp_path / "o3", "--model", model, "--quiet", "--lesions", "HE,XX")
    assert r.returncode == 2 and "unknown lesion type 'XX'" in r.stderr
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").glob("*.png"))


def test_evaluate_scores_each_type_asked_for(tmp_path: Path, small_typed_pairs: Path) -> None:
    import json
    import sys

    cfg = load_config("tiny", [f'data.images="{small_typed_pairs / "images"}"',
                               f'data.masks="{small_typed_pairs / "masks"}"', "data.val_every=2",
                               'model.network.outputs=["HE","SE","OD"]', "run.steps=2", "run.eval_every=2"])
    list(train(cfg, tmp_path / "run"))
    r = run_here([sys.executable, "-m", "napari_lesionseg.cli", "evaluate", "--images",
                        str(small_typed_pairs / "images"), "--masks", str(small_typed_pairs / "masks"),
                        "--model", str(tmp_path / "run" / "best"), "--lesions", "SE,OD", "--quiet",
                        "--out", str(tmp_path / "ev.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    types = json.loads((tmp_path / "ev.json").read_text())["types"]
    assert set(types) == {"SE", "OD"} and types["OD"]["images"] == 2
    assert 0.0 <= types["OD"]["dice_img"] <= 1.0 and types["OD"]["aupr"] is not None
    assert types["SE"]["empty_gt_images"] == 2  # no soft exudates on either photo: scored as known absent
    assert "OD" in r.stdout and "dice_img" in r.stdout
    assert "SE: none in the masks of these 2 photo(s)" in r.stdout and "nan" not in r.stdout  # not Dice 1.0, AUPR nan


def test_a_folder_of_photos_and_their_masks_yields_the_photos_only(tmp_path: Path) -> None:
    from napari_lesionseg.core.batch import collect_images
    from napari_lesionseg.core.bundled import sample_data_dir

    assert [p.name for p in collect_images([sample_data_dir()])] == ["IDRiD_04.jpg", "IDRiD_16.jpg"]
    lone = tmp_path / "x_OD.png"  # named like a mask, but no photo 'x' beside it: a photo
    lone.write_bytes((sample_data_dir() / "IDRiD_04_OD.png").read_bytes())
    assert [p.name for p in collect_images([tmp_path])] == ["x_OD.png"]
