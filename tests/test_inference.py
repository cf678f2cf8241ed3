"""Tiled inference, fuzzy map and lesion table, on a real (downscaled) IDRiD photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_config
from napari_lesionseg.core.dataclass_io import ConfigError
from napari_lesionseg.core.fuzzy import binary_entropy, fuzzy_map
from napari_lesionseg.core.inference import Progress, gaussian_window, predict, run_to_end, tile_starts
from napari_lesionseg.core.lesions import lesion_table, threshold_mask
from napari_lesionseg.core.model_config import FuzzyConfig
from napari_lesionseg.core.model_folder import LoadedModel, load_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.runtime import pick_device


@pytest.fixture(scope="module")
def small_rgb(sample_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(sample_rgb[::4, ::4])  # 536 x 356


def test_prediction_at_input_size_with_progress(tiny_model_dir: Path, small_rgb: np.ndarray) -> None:
    model = load_model_folder(tiny_model_dir)
    gen = predict(model, small_rgb)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            pred = stop.value
            break
    tiles = [e for e in events if e.stage == "tiles"]
    assert tiles[0].done == 0 and tiles[-1].done == tiles[-1].total > 1
    assert [e.done for e in tiles] == sorted(e.done for e in tiles)
    h, w = small_rgb.shape[:2]
    assert pred.probability.shape == pred.mask.shape == pred.fuzzy.shape == pred.labels.shape == (h, w)
    assert pred.probability.dtype == np.float32 and pred.mask.dtype == np.uint8
    assert 0 <= pred.probability.min() and pred.probability.max() <= 1
    assert 0 <= pred.fuzzy.min() and pred.fuzzy.max() <= 1
    outside = ~pred.geometry.input_fov_mask()
    assert outside.any() and pred.probability[outside].max() == 0 and pred.fuzzy[outside].max() == 0
    np.testing.assert_array_equal(pred.mask, (pred.probability > pred.threshold).astype(np.uint8))
    assert sum(les.area_px for les in pred.lesions) == int(pred.mask.sum())


def _constant_model(bias: float, **inference: object) -> LoadedModel:
    cfg = tiny_config(**inference)
    net = build_model(cfg.network).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(bias)
    return LoadedModel(net, cfg, None)


@pytest.mark.parametrize("tile", [32, 64, 512])
def test_blending_is_normalised_across_tiles(small_rgb: np.ndarray, tile: int) -> None:
    model = _constant_model(-3.0, tile_size=tile, tta="flips")
    pred = run_to_end(predict(model, small_rgb))
    inside = pred.geometry.input_fov_mask()
    # bilinear resampling mixes in the zeros beyond the rim (up to ~2 working pixels = 8 input
    # pixels here); the interior is exact
    from scipy import ndimage

    interior = ndimage.binary_erosion(inside, iterations=8)
    expected = 1 / (1 + np.exp(3.0))
    assert np.allclose(pred.probability[interior], expected, atol=1e-5)
    # the default fuzzy map is the probability's entropy, the same everywhere on a constant model
    assert np.allclose(pred.fuzzy[interior], binary_entropy(np.array([expected]))[0], atol=1e-4)


def test_tile_starts_cover_the_range() -> None:
    for length, tile, ov in [(100, 32, 0.25), (33, 32, 0.5), (32, 32, 0.25), (10, 32, 0.0), (1000, 256, 0.1)]:
        starts = tile_starts(length, tile, ov)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered.all() and starts[-1] + min(tile, length) == length and starts == sorted(starts)
    w = gaussian_window(16, 20)
    assert w.shape == (16, 20) and w.max() == pytest.approx(1.0) and w.min() > 0


def test_closing_the_generator_cancels(tiny_model_dir: Path, small_rgb: np.ndarray) -> None:
    model = load_model_folder(tiny_model_dir)
    gen = predict(model, small_rgb)
    assert isinstance(next(gen), Progress)
    next(gen)
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_fuzzy_map_kinds() -> None:
    p = np.array([0.5, 0.01, 0.99, 0.3])
    assert binary_entropy(np.array([0.5]))[0] == pytest.approx(1.0)
    soft = FuzzyConfig(map="soft_threshold", tau_ae=0.5, tau_er=0.05, delta=0.2)
    f = fuzzy_map(p, None, soft)
    assert f[0] == 1.0 and f[1] == 0.0 and f[2] == 0.0 and 0 < f[3] <= 1
    d = np.array([0.0, 0.2, 0.0, 0.0])
    f2 = fuzzy_map(p, d, soft)
    assert f2[1] == pytest.approx(0.75) and f2[2] == 0.0
    # the default: plain entropy, continuous (no clipping: 0.3 and 0.5 stay apart)
    np.testing.assert_allclose(fuzzy_map(p, d, FuzzyConfig()), binary_entropy(p))
    # error_rate: the knots read off at each probability, linearly between knots
    knots = [[0.0, 0.2, 0.25, 1.0], [0.0, 0.3, 0.7, 0.1]]
    er = fuzzy_map(np.array([0.0, 0.1, 0.2, 0.225, 0.625, 1.0]), None, FuzzyConfig(map="error_rate", error_rate=knots))
    np.testing.assert_allclose(er, [0.0, 0.15, 0.3, 0.5, 0.4, 0.1], atol=1e-6)


def test_error_rate_map_needs_knots() -> None:

    with pytest.raises(ConfigError, match="error_rate"):
        FuzzyConfig(map="error_rate")
    with pytest.raises(ConfigError, match="increase"):
        FuzzyConfig(map="error_rate", error_rate=[[0.5, 0.2], [0.1, 0.1]])


def test_lesion_table_and_minimum_area() -> None:
    prob = np.zeros((50, 60), np.float32)
    prob[10:20, 10:14] = 0.8  # 40 px
    prob[12, 12] = 0.95
    prob[40, 50] = 0.9  # a single pixel
    mask = threshold_mask(prob, 0.5, min_area=5)
    assert mask.sum() == 40
    fuzzy = np.zeros_like(prob)
    fuzzy[10:15, 10:14] = 1.0
    lesions, labels = lesion_table(mask, prob, fuzzy, mm_per_px=0.01)
    assert len(lesions) == 1
    les = lesions[0]
    assert (les.area_px, les.y0, les.y1, les.x0, les.x1) == (40, 10, 20, 10, 14)
    assert les.centroid_y == pytest.approx(14.5) and les.centroid_x == pytest.approx(11.5)
    assert les.max_prob == pytest.approx(0.95) and les.mean_prob == pytest.approx((39 * 0.8 + 0.95) / 40)
    assert les.fuzzy_fraction == pytest.approx(0.5) and les.area_mm2 == pytest.approx(40 * 1e-4)
    assert labels.max() == 1 and (labels > 0).sum() == 40


def test_device_choice() -> None:
    assert pick_device("auto").type == "cpu"
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="cuda"):
        pick_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("tpu")


def test_out_of_memory_retries_smaller_tiles_then_falls_back_to_cpu(monkeypatch, small_rgb: np.ndarray) -> None:
    """GPU stand-in: a device that 'runs out of memory' on tiles over 150 px, or always."""
    import napari_lesionseg.core.inference as inf

    real_run = inf._run_tile
    seen = []

    def fake_run(net, tile, stride, tta, device, dtype=None, speedups=True):
        if net is model.net:  # not the bundled model that places this model's disc (it has none)
            seen.append((device.type, tile.shape[-1]))
        if device.type == "cuda" and (always_oom or max(tile.shape[-2:]) > 150):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return (yield from real_run(net, tile, stride, tta, torch.device("cpu")))

    monkeypatch.setattr(inf, "_run_tile", fake_run)
    monkeypatch.setattr(inf, "_place", lambda net, dev: net.eval())  # no real GPU to move to
    model = _constant_model(-3.0, tile_size=512, tta="none")
    model.config.preprocess.fov_diameter = 400
    always_oom = False
    pred = run_to_end(predict(model, small_rgb, device=torch.device("cuda")))
    assert pred.notes == ["cuda ran out of memory: retrying with 256-px tiles",
                          "cuda ran out of memory: retrying with 128-px tiles"]
    assert seen[-1] == ("cuda", 128) and pred.probability.max() > 0
    always_oom = True
    seen.clear()
    pred = run_to_end(predict(model, small_rgb, device=torch.device("cuda")))
    assert pred.notes[-1] == "cuda ran out of memory even with 128-px tiles: finished on the CPU"
    assert seen[-1][0] == "cpu"
    assert pred.anatomy.disc_source  # the disc placed on the CPU too


def test_batchnorm_folding_keeps_results_and_follows_weight_changes() -> None:
    import torch

    from napari_lesionseg.core.inference import inference_net
    from napari_lesionseg.core.models import build_model
    from napari_lesionseg.core.models.fuse import fold_batchnorm

    cfg = tiny_config()
    net = build_model(cfg.network)
    net.train()
    with torch.no_grad():  # give BatchNorm non-trivial statistics and affine parameters
        for _ in range(3):
            net(torch.randn(2, cfg.network.in_channels, 32, 32) * 3 + 1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1, 1)
    net.eval()
    fused, n = fold_batchnorm(net)
    assert n > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) and not isinstance(m, torch.nn.Identity)
                             for m in fused.modules())
    x = torch.randn(1, cfg.network.in_channels, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x).logits, net(x).logits, atol=1e-4, rtol=1e-4)
        first = inference_net(net)
        assert inference_net(net) is first  # cached
        next(net.parameters()).mul_(0.5)  # weights changed in place (as training does)
        second = inference_net(net)
        assert second is not first
        torch.testing.assert_close(second(x).logits, net(x).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("min_area", [1, 5, 30])
def test_labelled_mask_equals_threshold_then_label(min_area: int) -> None:
    from scipy import ndimage

    from napari_lesionseg.core.lesions import labelled_mask

    rng = np.random.default_rng(7)
    prob = ndimage.gaussian_filter(rng.random((120, 150)).astype(np.float32), 2.0)
    thr = float(np.quantile(prob, 0.9))
    mask, labels = labelled_mask(prob, thr, min_area)
    ref_mask = threshold_mask(prob, thr, min_area)
    _, ref_labels = lesion_table(ref_mask, prob)
    assert mask.dtype == np.uint8 and np.array_equal(mask, ref_mask)
    assert labels.dtype == np.int32 and np.array_equal(labels, ref_labels)
    assert ref_labels.max() > 3  # the case is not trivial


def test_precision_choice(monkeypatch) -> None:
    import napari_lesionseg.core.runtime as rt

    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    assert rt.autocast_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: False)
    assert rt.autocast_dtype("auto", cpu) is None  # emulated bf16 is slower than fp32
    assert rt.autocast_dtype("bf16", cpu) == torch.bfloat16  # asked for: given
    assert rt.autocast_dtype("auto", cuda) == torch.float16
    assert rt.autocast_dtype("auto", mps) is None
    assert rt.autocast_dtype("fp32", cuda) is None and rt.autocast_dtype("fp32", cpu) is None
    with pytest.raises(ConfigError, match="unknown precision 'half'"):
        rt.autocast_dtype("half", cpu)


def test_bf16_matches_fp32_and_parallel_views_match_sequential(tiny_model_dir: Path, small_rgb: np.ndarray,
                                                               monkeypatch) -> None:
    """bf16 changes probabilities by rounding only; views run two at a time (bf16 on a CPU)
    give what one at a time gives, and leave the caller's thread count alone."""
    import napari_lesionseg.core.inference as inf

    model = load_model_folder(tiny_model_dir)
    threads = torch.get_num_threads()
    p32 = run_to_end(predict(model, small_rgb, tta="flips", precision="fp32"))
    assert p32.precision == "fp32"
    monkeypatch.setattr(inf, "default_threads", lambda: 2)
    assert inf.views_in_parallel(torch.device("cpu"), torch.bfloat16, 4)
    assert not inf.views_in_parallel(torch.device("cpu"), None, 4)
    par = run_to_end(predict(model, small_rgb, tta="flips", precision="bf16"))
    assert par.precision == "bf16" and torch.get_num_threads() == threads
    monkeypatch.setattr(inf, "views_in_parallel", lambda *a: False)
    seq = run_to_end(predict(model, small_rgb, tta="flips", precision="bf16"))
    np.testing.assert_allclose(par.probability, seq.probability, atol=1e-6)
    np.testing.assert_allclose(par.fuzzy, seq.fuzzy, atol=1e-6)
    diff = np.abs(par.probability - p32.probability).max()
    assert 0 < diff < 0.02  # bf16 really ran, and only rounded


def _random_masks():
    rng = np.random.default_rng(11)
    yield np.zeros((5, 7), bool)
    yield np.ones((5, 7), bool)
    yield np.ones((1, 9), bool)
    yield np.ones((9, 1), bool)
    yield np.eye(6, dtype=bool)  # diagonal chain: one component under 8-connectivity
    wrap = np.zeros((3, 4), bool)
    wrap[0, 3] = wrap[1, 0] = True  # consecutive in memory, not neighbours
    yield wrap
    for density in (0.02, 0.2, 0.45, 0.6, 0.9):
        for shape in ((1, 50), (40, 1), (37, 53), (128, 96)):
            yield rng.random(shape) < density


def test_lesion_counts_of_a_label_map_equal_scipys_per_value() -> None:
    from scipy import ndimage

    from napari_lesionseg.core.lesions import lesion_counts

    rng = np.random.default_rng(3)
    for mask in _random_masks():
        label = mask.astype(np.uint8) * rng.integers(1, 5, mask.shape).astype(np.uint8)
        counts = lesion_counts(label, [1, 2, 3, 4, 9])
        for v in (1, 2, 3, 4, 9):
            n = ndimage.label(label == v, structure=np.ones((3, 3), bool))[1]
            assert counts[v] == (n, int((label == v).sum())), (v, mask.shape)


def test_run_labelling_equals_scipy_label_and_find_objects() -> None:
    """The run-based labelling and the pixel-list statistics against scipy's pixel-wise ones."""
    from scipy import ndimage

    from napari_lesionseg.core.lesions import component_stats, label_runs

    for mask in _random_masks():
        ref, n_ref = ndimage.label(mask, structure=np.ones((3, 3), bool))
        lab, n, idx, ids = label_runs(mask)
        assert n == n_ref and lab.dtype == np.int32 and np.array_equal(lab, ref), mask.shape
        np.testing.assert_array_equal(idx, np.flatnonzero(mask))
        np.testing.assert_array_equal(ids, ref.ravel()[idx])
        prob = np.linspace(0, 1, mask.size, dtype=np.float32).reshape(mask.shape)
        st = component_stats(lab, n, prob, with_max=True)
        assert st.boxes == ndimage.find_objects(ref)
        np.testing.assert_array_equal(st.area[1:], np.bincount(ref.ravel(), minlength=n + 1)[1:])
        if n:
            np.testing.assert_allclose(st.prob_max[1:], ndimage.maximum(prob, ref, np.arange(1, n + 1)))


def test_calibration_in_row_blocks_equals_one_interp() -> None:
    from napari_lesionseg.core.inference import apply_calibration

    knots = [[0.0, 0.1, 0.5, 0.9, 1.0], [0.0, 0.02, 0.3, 0.95, 1.0]]
    p = np.random.default_rng(3).random((97, 61)).astype(np.float32)
    ref = np.interp(p, knots[0], knots[1]).astype(np.float32)
    np.testing.assert_array_equal(apply_calibration(p, knots), ref)
    np.testing.assert_array_equal(apply_calibration(p[0], knots), ref[0])
    assert apply_calibration(p, None) is p


def test_conv_relu_fusion_keeps_results() -> None:
    """The fused oneDNN conv+ReLU gives what conv then ReLU gives, in fp32 and under bf16
    autocast; elsewhere (no oneDNN op) it is the plain pair."""
    from napari_lesionseg.core.inference import inference_net
    from napari_lesionseg.core.models.fuse import ConvReLU, fold_batchnorm, pointwise_works

    net = build_model(tiny_config().network).eval()
    plain = fold_batchnorm(net)[0].to(memory_format=torch.channels_last)
    fused = inference_net(net).to(memory_format=torch.channels_last)
    n_fused = sum(isinstance(m, ConvReLU) for m in fused.modules())
    assert n_fused == sum(isinstance(m, torch.nn.ReLU) for m in plain.modules()) > 0
    assert not any(isinstance(m, torch.nn.ReLU) for m in fused.modules())
    x = torch.randn(1, net_in(net), 64, 48).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x).logits, plain(x).logits, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = fused(x).logits.float(), plain(x).logits.float()
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
    assert pointwise_works()  # the CPU build we ship against has the op: the fast path was tested
    # bf16 fuses only where oneDNN runs it (AVX-512 BW/VL/DQ or AVX-NE-CONVERT), else the plain pair ran above


def test_decoder_joins_without_concatenation_keep_results(monkeypatch) -> None:
    """Each U-Net decoder block of the tuned copy takes the upsampled features and the skip apart
    (the convolution split along its inputs, the sum and ReLU as oneDNN post-ops): the same
    logits as the concatenation, in fp32 and under bf16 autocast, for a single network and for
    each member of an ensemble; where the op cannot run, the concatenation."""
    from napari_lesionseg.core.inference import inference_net
    from napari_lesionseg.core.models import fuse
    from napari_lesionseg.core.models.ensemble import MeanEnsemble

    real_upsample = fuse.upsample2x
    single = build_model(tiny_config().network).eval()
    pair = MeanEnsemble([build_model(tiny_config().network), build_model(tiny_config().network)]).eval()
    residual_cfg = tiny_config().network
    residual_cfg.residual_decoder = True
    residual = build_model(residual_cfg).eval()  # its blocks' shortcuts read the concatenation: left as they are
    for net in (single, pair, residual):
        for m in net.modules():  # BatchNorm statistics other than the initial ones: folding is not a no-op
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        plain = fuse.fold_batchnorm(net)[0]  # BatchNorm folded, nothing else
        tuned = inference_net(net).to(memory_format=torch.channels_last)
        joins = [m for m in tuned.modules() if isinstance(m, fuse.JoinBlock)]
        unets = [m for m in tuned.modules() if hasattr(m, "skip_widths")]
        assert len(joins) == (0 if net is residual else sum(len(u.up) for u in unets)) and unets
        x = torch.randn(1, net_in(net), 64, 48).contiguous(memory_format=torch.channels_last)
        ups: list[object] = []
        monkeypatch.setattr(fuse, "upsample2x", lambda h, ups=ups: ups.append(h.shape) or real_upsample(h))
        with torch.inference_mode():
            ref = plain(x).logits
            torch.testing.assert_close(tuned(x).logits, ref, atol=1e-4, rtol=1e-4)
            assert len(ups) == len(joins)  # each join upsampled by its transposed convolution
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = tuned(x).logits.float()
            torch.testing.assert_close(got, ref, atol=5e-2, rtol=5e-2)
            calls: list[object] = []
            monkeypatch.setattr(fuse, "binary_works", lambda dtype=None, calls=calls: calls.append(dtype) or False)
            torch.testing.assert_close(tuned(x).logits, ref, atol=1e-4, rtol=1e-4)
            assert bool(calls) == bool(joins)  # the fallback (the concatenation) is what ran
            monkeypatch.undo()
    assert fuse.binary_works()  # the CPU build we ship against has the op: the fast path was tested


def test_decoder_joins_keep_the_concatenation_in_an_unmeasured_precision(monkeypatch) -> None:
    """The rewrite is taken only in the precisions measured faster (``JOIN_DTYPES``: fp32, and
    bf16 on a CPU with native bf16); where oneDNN's joined op would run in another precision
    (fp16), the decoder still concatenates."""
    from napari_lesionseg.core.models import fuse

    assert fuse.JOIN_DTYPES == {torch.float32, torch.bfloat16}
    conv = torch.nn.Conv2d(6, 4, 3, padding=1)
    join = fuse.JoinConvReLU(fuse.ConvReLU(conv), 2)
    h = torch.randn(1, 2, 8, 8).contiguous(memory_format=torch.channels_last)
    s = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    ref = torch.relu(conv(torch.cat([h, s], 1)))
    joined: list[torch.dtype] = []
    real_binary, real_pointwise = fuse._BINARY, fuse._POINTWISE

    def in_fp32(op):  # runs a oneDNN op in fp32 whatever it is given (no bf16 kernels on every CPU)
        return lambda *args: op(*[a.float() if isinstance(a, torch.Tensor) else a for a in args])

    def spy(x, *args):
        joined.append(x.dtype)
        return in_fp32(real_binary)(x, *args)

    monkeypatch.setattr(fuse, "_BINARY", spy)
    monkeypatch.setattr(fuse, "_POINTWISE", in_fp32(real_pointwise))
    with torch.inference_mode():
        torch.testing.assert_close(join(h, s), ref, atol=1e-5, rtol=1e-5)
        assert joined == [torch.float32]  # fp32: measured, joined
        for dtype, takes_join in ((torch.bfloat16, True), (torch.float16, False)):
            # as on a CPU where the joined op would run in that precision
            monkeypatch.setattr(fuse, "_onednn_dtype", lambda x, works, d=dtype: d if works is fuse.binary_works else None)
            joined.clear()
            out = join(h, s)
            assert joined == ([dtype] if takes_join else [])  # bf16 measured: joined; fp16 not: the concatenation
            torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 32, 44, 52), (1, 4, 1, 1), (1, 2, 1, 6)])
def test_upsampling_by_two_as_a_transposed_convolution_equals_interpolate(shape: tuple[int, ...]) -> None:
    """The decoders' upsampling in the tuned copy (a depthwise transposed convolution of the map
    with its edges repeated) gives PyTorch's bilinear upsampling, edges included, in either
    memory format."""
    from napari_lesionseg.core.models.fuse import upsample2x

    x = torch.randn(shape)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    for fmt in (torch.contiguous_format, torch.channels_last):
        got = upsample2x(x.contiguous(memory_format=fmt))
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


def net_in(net: torch.nn.Module) -> int:
    return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).in_channels


def test_cpu_out_of_memory_retries_smaller_tiles_then_is_a_clear_error(monkeypatch, small_rgb: np.ndarray) -> None:
    """On the CPU an allocation failure (a config with huge tiles) once ended in an allocator
    traceback: now smaller tiles are tried, then a clear error naming the model."""
    import napari_lesionseg.core.inference as inf
    from napari_lesionseg.core.errors import LesionsegInputError

    real_run = inf._run_tile

    def fake_run(net, tile, stride, tta, device, dtype=None, speedups=True):
        if always_oom or max(tile.shape[-2:]) > 150:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 19327352832 bytes. Error code 12")
        return (yield from real_run(net, tile, stride, tta, device))

    monkeypatch.setattr(inf, "_run_tile", fake_run)
    model = _constant_model(-3.0, tile_size=512, tta="none")
    model.config.preprocess.fov_diameter = 400
    always_oom = False
    pred = run_to_end(predict(model, small_rgb, device=torch.device("cpu")))
    assert pred.notes == ["cpu ran out of memory: retrying with 256-px tiles",
                          "cpu ran out of memory: retrying with 128-px tiles"]
    # the bundled model that places this disc-less model's disc ran out too: no disc, said, no failure
    assert pred.anatomy.disc_centre is None and "not enough memory to place the disc" in pred.anatomy.note
    always_oom = True
    with pytest.raises(LesionsegInputError, match="not enough memory .* even with 128-px tiles"):
        run_to_end(predict(model, small_rgb, device=torch.device("cpu")))
    assert inf.is_out_of_memory(MemoryError()) and not inf.is_out_of_memory(RuntimeError("shape mismatch"))


def test_the_model_as_trained_gives_what_the_tuned_path_gives(tiny_model_dir: Path, small_rgb: np.ndarray) -> None:
    """``speedups=False`` (the speed benchmark's baseline, no private functions patched) runs
    the unfused NCHW fp32 model and agrees with the tuned fp32 path."""
    model = load_model_folder(tiny_model_dir)
    tuned = run_to_end(predict(model, small_rgb, tta="flips", precision="fp32"))
    plain = run_to_end(predict(model, small_rgb, tta="flips", precision="bf16", speedups=False))
    assert plain.precision == "fp32"  # the baseline ignores the precision asked for
    np.testing.assert_allclose(plain.probability, tuned.probability, atol=1e-4)


def test_lesion_table_equals_scikit_image_regionprops() -> None:
    """The hand-written lesion table (kept for speed, benchmarks/lesion_table_speed.py) against
    scikit-image's label + regionprops on random masks with a probability and a fuzzy map."""
    skimage_measure = pytest.importorskip("skimage.measure")
    from napari_lesionseg.core.lesions import lesion_table

    rng = np.random.default_rng(5)
    for k in range(6):
        mask = (rng.random((60 + k, 90)) > 0.8).astype(np.uint8)
        prob = rng.random(mask.shape).astype(np.float32)
        fuzzy = rng.random(mask.shape).astype(np.float32)
        lesions, labels = lesion_table(mask, prob, fuzzy, mm_per_px=0.01)
        ref = skimage_measure.label(mask, connectivity=2)
        np.testing.assert_array_equal(labels, ref)
        props = skimage_measure.regionprops(ref, intensity_image=np.stack([prob, (fuzzy > 0.5) * 1.0], -1))
        assert len(props) == len(lesions)
        for les, p in zip(lesions, props):
            assert les.area_px == p.area and (les.y0, les.x0, les.y1, les.x1) == p.bbox
            np.testing.assert_allclose((les.centroid_y, les.centroid_x), p.centroid, atol=1e-9)
            np.testing.assert_allclose([les.mean_prob, les.fuzzy_fraction], p.intensity_mean, atol=1e-6)
            assert abs(les.max_prob - p.intensity_max[0]) < 1e-7
            assert abs(les.area_mm2 - p.area * 1e-4) < 1e-12


def test_one_tile_photo_still_shows_progress_per_view(tiny_model_dir: Path, small_rgb: np.ndarray) -> None:
    """Progress once went 0 -> 1 in one step when a whole photo is one tile (the default model
    on an IDRiD photo): it now counts the TTA views."""
    model = load_model_folder(tiny_model_dir)
    model.config.inference.tile_size = 2048  # the whole working grid in one tile
    events: list[Progress] = []
    run_to_end(predict(model, small_rgb, tta="flips", precision="fp32"), events.append)  # views one by one
    tiles = [e for e in events if e.stage == "tiles"]
    assert tiles[-1].total == 4 and [e.done for e in tiles] == [0, 1, 2, 3, 4]


def test_evaluation_scores_pool_over_runs(tiny_model_dir: Path, small_pairs: Path) -> None:
    """``evaluate_pairs`` keeps its accumulated scores: two runs over one photo each, pooled
    from their saved state, are the one run over both (how cross-validation folds are pooled)."""
    import json

    from napari_lesionseg.core.batch import evaluate_pairs, find_eval_pairs
    from napari_lesionseg.core.metrics import DatasetScores, LesionCounts, pool_scores

    model = load_model_folder(tiny_model_dir)
    pairs = find_eval_pairs(small_pairs / "images", small_pairs / "masks")
    assert len(pairs) == 2
    _, both = run_to_end(evaluate_pairs(model, pairs, tta="none"))
    states = [json.loads(json.dumps(run_to_end(evaluate_pairs(model, [p], tta="none"))[1].score_state()))
              for p in pairs]
    pooled = pool_scores([DatasetScores.from_state(s["scores"]["HE"]) for s in states]).summary()
    for key in ("aupr", "dice_ds", "dice_img", "images"):
        assert pooled[key] == pytest.approx(both.summary[key], abs=1e-12, nan_ok=True), key
    counts = [LesionCounts(**s["lesions"]) for s in states]
    assert sum(c.gt for c in counts) == both.lesions.gt and sum(c.pred for c in counts) == both.lesions.pred


def _at_grid(model: LoadedModel, grid: int, extra: list[int]) -> LoadedModel:
    from dataclasses import replace

    cfg = replace(model.config, preprocess=replace(model.config.preprocess, fov_diameter=grid))
    return replace(model, config=cfg).with_extra_grids(extra)


def test_extra_grids_average_each_grids_probability(small_rgb: np.ndarray) -> None:
    """``inference.extra_grids``: the probability is the mean of what the model gives on its
    own grid and on each extra grid alone (up to the order of resampling, each grid onto the
    model's and then to the photo against each grid to the photo: compared smoothed, where that
    order does not show and a grid left out or counted twice does), and progress counts every
    grid's tiles and views as one run."""
    from scipy import ndimage

    cfg = tiny_config()
    torch.manual_seed(0)
    net = build_model(cfg.network).eval()
    with torch.no_grad():  # a random network whose probability varies across the photo
        net.head.weight.mul_(40)
        net.head.bias.zero_()
    model = LoadedModel(net, cfg, None)
    alone = [run_to_end(predict(_at_grid(model, g, []), small_rgb, precision="fp32")) for g in (128, 80, 224)]
    events: list[Progress] = []
    both = run_to_end(predict(_at_grid(model, 128, [80, 224]), small_rgb, precision="fp32"), events.append)
    inside = ndimage.binary_erosion(both.geometry.input_fov_mask(), iterations=12)

    def gap(p: np.ndarray) -> float:
        return float(np.abs(ndimage.gaussian_filter(both.probability, 4) - ndimage.gaussian_filter(p, 4))[inside].mean())

    p0, p1, p2 = (a.probability for a in alone)
    wrong = [p0, (p0 + p1) / 2, (p0 + p2) / 2, (p1 + p2) / 2, (2 * p0 + p1 + p2) / 4]
    assert gap((p0 + p1 + p2) / 3) < 0.5 * min(gap(w) for w in wrong)
    tiles = [e for e in events if e.stage == "tiles"]
    units = [len(tile_starts(a.geometry.work_shape[0], 64, 0.25)) * len(tile_starts(a.geometry.work_shape[1], 64, 0.25))
             * 2 for a in alone]  # hflip: 2 views a tile
    assert tiles[0].done == 0 and tiles[-1].done == tiles[-1].total == sum(units)
    assert {e.total for e in tiles} == {sum(units)} and [e.done for e in tiles] == sorted(e.done for e in tiles)


@pytest.mark.parametrize("grids", [[16], [4096], [700, 700]])
def test_extra_grids_out_of_range_or_repeated_are_refused(grids: list[int]) -> None:
    with pytest.raises(ConfigError, match="inference.extra_grids"):
        tiny_config(extra_grids=grids)


def test_a_folders_tile_progress_ends_at_each_photos_total(tiny_model_dir: Path, small_rgb: np.ndarray,
                                                            tmp_path: Path) -> None:
    """``predict_files``' ``tile`` events count a photo's tiles and views over all its grids
    up to their total, and nothing after: the photo's end comes as a ``stage`` event (the
    command line's bar once showed "tile 2/2" then "tile 1/1")."""
    from PIL import Image

    from napari_lesionseg.core.batch import predict_files

    Image.fromarray(small_rgb).save(tmp_path / "photo.png")
    model = _at_grid(load_model_folder(tiny_model_dir), 128, [96])
    events: list[dict] = []
    run_to_end(predict_files(model, [tmp_path / "photo.png"], tmp_path / "out"), events.append)
    tiles = [e for e in events if e["event"] == "tile"]
    assert len({e["total"] for e in tiles}) == 1 and tiles[-1]["done"] == tiles[-1]["total"] > 2
    assert [e["done"] for e in tiles] == sorted(e["done"] for e in tiles)
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["done"]
