"""Models that average several networks (``network.members``): built, run, composed from
model folders, saved, loaded and fine-tuned like any other model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY
from napari_lesionseg.core.dataclass_io import ConfigError, from_dict
from napari_lesionseg.core.model_config import ModelConfig
from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder
from napari_lesionseg.core.models import NetworkConfig, build_model
from napari_lesionseg.core.models.ensemble import MeanEnsemble, members


def _folder(root: Path, name: str, outputs: list[str], seed: int, **metrics: object) -> Path:
    cfg = from_dict(ModelConfig, {**TINY, "name": name, "network": {**TINY["network"], "outputs": outputs}})
    torch.manual_seed(seed)
    net = build_model(cfg.network)
    with torch.no_grad():  # members that disagree: a random, non-trivial output layer
        net.head.weight.normal_(0, 0.5)
        net.head.bias.normal_(-1.0, 1.0)
    return save_model_folder(root / name, net, cfg, dict(metrics),
                             {"kind": "test", "data": {f"{name}_photo": "sha"}, "dataset_credit": "IDRiD"})


def test_the_network_is_the_mean_of_its_members_probabilities() -> None:
    net = build_model(NetworkConfig(widths=[4, 8, 16], decoder_channels=[8, 8, 8, 8], members=3)).eval()
    assert isinstance(net, MeanEnsemble) and len(members(net)) == 3
    assert {n.split(".")[1] for n in net.state_dict()} == {"0", "1", "2"}
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        for m in members(net):  # away from the prior, so that the members disagree
            m.head.weight.normal_(0, 0.5)
            m.head.bias.normal_(0, 1.0)
        want = torch.stack([torch.sigmoid(m(x).logits) for m in members(net)]).mean(0)
        got = torch.sigmoid(net(x).logits)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(want, torch.sigmoid(members(net)[0](x).logits), atol=1e-3)  # members differ


def test_members_out_of_range_or_with_gates_are_refused() -> None:
    for n in (0, 5):
        with pytest.raises(ConfigError, match="network.members"):
            NetworkConfig(members=n)
    with pytest.raises(ConfigError, match="network.members"):
        from_dict(NetworkConfig, {"arch": "dynsegnet_unet", "members": 2, "dynamic": {"mode": "gates"}}, "network")
    from lesionseg_training.train_config import load_config

    with pytest.raises(ConfigError, match="model.network.members"):  # DALE aligns one network's features
        load_config("tiny", ["model.network.members=2", 'paradigm.type="dale"'])


def test_compose_save_load_and_predict_the_mean(tmp_path: Path, sample_rgb: np.ndarray) -> None:
    """A 3-output model and an HE-only one make an HE ensemble: the 3-output member gives its
    HE row only, the folder loads (weights checked against the config), and ``predict`` gives
    the mean of what the two members predict on their own (every member is a view)."""
    from lesionseg_training.ensemble import main
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.progress import run_to_end

    a = _folder(tmp_path, "a", ["HE", "MA", "OD"], 1, val_images=["IDRiD_01", "IDRiD_06"])
    b = _folder(tmp_path, "b", ["HE"], 2, val_images=["IDRiD_01", "IDRiD_11"])
    out = tmp_path / "ens"
    assert main(["--members", str(a), str(b), "--outputs", "HE", "--name", "ens", "--out", str(out)]) == 0
    ens = load_model_folder(out)
    assert ens.config.network.members == 2 and ens.config.network.outputs == ["HE"]
    assert ens.config.inference.tta == "none" and ens.config.inference.calibration is None
    assert ens.unseen_photos == ["IDRiD_01"]  # held out by both
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["kind"] == "ensemble" and [m["name"] for m in lineage["members"]] == ["a", "b"]
    assert set(lineage["data"]) == {"a_photo", "b_photo"} and lineage["dataset_credit"] == "IDRiD"
    assert lineage["command"].startswith("python -m lesionseg_training.ensemble --members")

    rgb = sample_rgb[::8, ::8].copy()
    kw = {"tta": "none", "precision": "fp32", "speedups": False, "types": []}
    pa = run_to_end(predict(load_model_folder(a), rgb, **kw)).probability
    pb = run_to_end(predict(load_model_folder(b), rgb, **kw)).probability
    pe = run_to_end(predict(ens, rgb, **kw))
    assert np.abs(pa - pb).max() > 0.05  # the members disagree somewhere
    np.testing.assert_allclose(pe.probability, (pa + pb) / 2, atol=2e-5)
    fast = run_to_end(predict(ens, rgb, tta="none", types=[])).probability  # the members as parallel views
    assert np.abs(fast - pe.probability).max() < 0.02


def test_compose_refuses_what_cannot_be_averaged(tmp_path: Path) -> None:
    from lesionseg_training.ensemble import main

    a = _folder(tmp_path, "a", ["HE", "MA"], 1)
    b = _folder(tmp_path, "b", ["HE"], 2)
    cfg = from_dict(ModelConfig, {**TINY, "name": "wide", "network": {**TINY["network"], "widths": [8, 16, 32]}})
    wide = save_model_folder(tmp_path / "wide", build_model(cfg.network), cfg, {}, {})
    assert main(["--members", str(a), str(wide), "--out", str(tmp_path / "x")]) == 2  # another network
    assert main(["--members", str(b), str(a), "--outputs", "HE,MA", "--out", str(tmp_path / "y")]) == 2  # b has no MA
    ens = tmp_path / "ens"
    assert main(["--members", str(a), str(b), "--outputs", "HE", "--out", str(ens)]) == 0
    assert main(["--members", str(ens), str(b), "--outputs", "HE", "--out", str(tmp_path / "z")]) == 2  # nested
    assert not any((tmp_path / n).exists() for n in "xyz")
    before = sorted(p.name for p in ens.iterdir())  # an existing folder is never overwritten
    assert main(["--members", str(a), str(b), "--outputs", "HE", "--out", str(ens)]) == 2
    assert sorted(p.name for p in ens.iterdir()) == before


def test_an_ensemble_fine_tunes_every_member(tmp_path: Path, small_pairs: Path) -> None:
    """The fine-tune trains both members through their mean, and its new version is an
    ensemble too; ``train_only`` finds the parts inside every member."""
    from lesionseg_training.ensemble import main
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.pairs import match_pairs
    from napari_lesionseg.core.progress import run_to_end

    a = _folder(tmp_path, "a", ["HE"], 1)
    b = _folder(tmp_path, "b", ["HE"], 2)
    ens = tmp_path / "ens"
    assert main(["--members", str(a), str(b), "--out", str(ens)]) == 0
    base = {n: p.detach().clone() for n, p in load_model_folder(ens).net.named_parameters()}
    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    for which in ("all", "decoder"):
        out = tmp_path / f"tuned_{which}"
        budget = Budget(steps=3, train_only=which, replay_share=0.0, lr=1e-2, keep_base_if_better=False)
        run_to_end(fine_tune(ens, pairs, budget, out))
        tuned = load_model_folder(out)
        assert tuned.config.network.members == 2
        changed = {n for n, p in tuned.net.named_parameters() if not torch.equal(p, base[n])}
        for i in (0, 1):
            mine = {n for n in changed if n.startswith(f"members.{i}.")}
            assert mine, f"member {i} was not trained ({which})"
            if which == "decoder":
                assert not any(n.startswith(f"members.{i}.down.") for n in mine)
    # --members 1: the second network trains, the first keeps the base's weights bit for bit
    out = tmp_path / "tuned_member1"
    run_to_end(fine_tune(ens, pairs, Budget(steps=3, members=(1,), replay_share=0.0, lr=1e-2,
                                            keep_base_if_better=False), out))
    changed = {n for n, p in load_model_folder(out).net.named_parameters() if not torch.equal(p, base[n])}
    assert changed and all(n.startswith("members.1.") for n in changed)


def test_training_members_that_do_not_exist_is_refused() -> None:
    from lesionseg_training.adapt import trainable
    from lesionseg_training.train_config import load_config

    with pytest.raises(ConfigError, match="run.train_members"):
        load_config("tiny", ["model.network.members=2", "run.train_members=[2]"])
    with pytest.raises(ConfigError, match="run.train_members"):
        load_config("tiny", ["run.train_members=[0]"])  # one network: no members to choose
    assert load_config("tiny", ["model.network.members=2", "run.train_members=[1]"]).run.train_members == [1]
    with pytest.raises(ValueError, match="no ensemble members"):
        trainable(torch.nn.Conv2d(1, 1, 1), "all", "unet_small", members=(0,))


def _hemorrhage_rows(member: torch.nn.Module, outputs: list[str],
                     like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A five-output member's weights as the HE-only network ``like`` holds them: every tensor
    as it is but those running over the outputs, which keep their hemorrhage row."""
    he = outputs.index("HE")
    return {k: (v if v.shape == like[k].shape else v[he:he + 1]) for k, v in member.state_dict().items()}


def test_the_bundled_default_averages_its_recipe_and_the_bundled_multi_models_hemorrhages() -> None:
    """The shipped default is two networks: the default recipe's (``configs/default.toml``, as
    ``test_the_shipped_default_was_trained_by_the_shipped_recipe`` checks) and the hemorrhage
    output of the bundled ``multi`` model's clean-crop network (its first member), weight for
    weight; its calibration was fitted out of fold, and both members kept the two sample photos
    out."""
    from napari_lesionseg.core.bundled import default_model_dir

    default = load_model_folder(default_model_dir())
    multi = load_model_folder(Path(default_model_dir()).parent / "multi")
    assert default.config.network.members == 2 and default.config.network.outputs == ["HE"]
    lineage = default.lineage
    assert lineage["kind"] == "ensemble"
    assert lineage["members"][1]["weights_sha256"] == multi.lineage["members"][0]["weights_sha256"]
    got = members(default.net)[1].state_dict()
    want = _hemorrhage_rows(members(multi.net)[0], multi.config.network.outputs, got)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert default.metrics["calibration"]["fitted_on"] == "out_of_fold"
    assert default.unseen_photos == ["IDRiD_04", "IDRiD_16"]
    assert all(set(m["lineage"]["held_out"]) >= {"IDRiD_04", "IDRiD_16"} for m in lineage["members"])


def test_the_bundled_multi_averages_the_clean_and_the_camera_five_output_recipes() -> None:
    """The bundled ``multi`` model is two five-output networks of one recipe, the first trained
    on clean crops and the second with half its crops through simulated cameras (the pair
    cross-validated in training/README.md, "Folds 2 and 3, and the rule applied"); both trained
    4000 steps on the same photos, the samples kept out; its calibration was fitted out of fold,
    one per output."""
    from lesionseg_training.train_config import TrainConfig
    from napari_lesionseg.core.bundled import default_model_dir
    from napari_lesionseg.core.dataclass_io import to_dict

    multi = load_model_folder(Path(default_model_dir()).parent / "multi")
    five = ["HE", "MA", "EX", "SE", "OD"]
    assert multi.config.network.members == 2 and multi.config.network.outputs == five
    lineage = multi.lineage
    assert lineage["kind"] == "ensemble" and len(lineage["members"]) == 2
    recipes = [to_dict(from_dict(TrainConfig, m["lineage"]["recipe"])) for m in lineage["members"]]
    assert [r["data"]["cameras"]["share"] for r in recipes] == [0.0, 0.5]
    assert all(r["run"]["steps"] == 4000 and r["data"]["final"] is True for r in recipes)
    assert recipes[0]["data"]["exclude_ids"] == recipes[1]["data"]["exclude_ids"]
    assert all(set(m["lineage"]["data"]) == set(lineage["data"]) for m in lineage["members"])
    calibration = multi.metrics["calibration"]
    assert calibration["fitted_on"] == "out_of_fold"
    assert all(f"platt_a_{t}" in calibration for t in five[1:]) and "platt_a" in calibration
    assert multi.unseen_photos == ["IDRiD_04", "IDRiD_16"]
    a, b = members(multi.net)
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
