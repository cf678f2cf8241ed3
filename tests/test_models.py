"""The model family: METHODS.md unit-test properties 1.7 (DynSegNet), 3.7 (SGDC), 4.6 (SegAN)
that concern the networks themselves (the training-loop properties live in the training tests)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_lesionseg.core.models import (
    AsppConfig,
    DynamicConfig,
    EncoderConfig,
    NetworkConfig,
    SgdcConfig,
    build_model,
)
from napari_lesionseg.core.models.blocks import ASPP, AttentionGate
from napari_lesionseg.core.models.discriminators import ImageGAN, PatchGAN, SeganCritic, mask_image, multiscale_l1
from napari_lesionseg.core.models.resnet import ResNetEncoder, load_encoder_weights
from napari_lesionseg.core.models.sgdc import SGDC, SGE, SOBEL_X, SOBEL_Y

SMALL = dict(arch="dynsegnet_unet", in_channels=3,
             encoder=EncoderConfig(type="resnet50", width=8, blocks=[1, 1, 1, 1]),
             aspp=AsppConfig(channels=32), decoder_channels=[32, 16, 16, 8],
             attention_gates=True, residual_decoder=True)


# ---- DynSegNet (METHODS.md 1.7) ------------------------------------------------------------
@torch.no_grad()
def test_resnet50_feature_shapes_at_512() -> None:
    enc = ResNetEncoder(EncoderConfig(type="resnet50"), 3).eval()
    feats = enc(torch.zeros(1, 3, 512, 512))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 256, 256), (256, 128, 128), (512, 64, 64),
                                                   (1024, 32, 32), (2048, 16, 16)]


def test_resnet_uses_torchvision_names_and_loads_a_local_state_dict(tmp_path) -> None:
    enc = ResNetEncoder(EncoderConfig(type="resnet18"), 3)
    keys = set(enc.state_dict())
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer4.1.bn2.weight"):
        assert k in keys
    src = ResNetEncoder(EncoderConfig(type="resnet18"), 3)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["fc.weight"] = torch.zeros(1000, 512)  # an ImageNet file carries the classifier: skipped
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "r18.safetensors"))
    enc4 = ResNetEncoder(EncoderConfig(type="resnet18", weights_path=str(tmp_path / "r18.safetensors")), 4)
    assert torch.equal(enc4.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert torch.equal(enc4.conv1.weight[:, :3], src.conv1.weight)  # RGB filters kept, 4th channel added
    sd["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        load_encoder_weights(enc, tmp_path / "bad.safetensors")


def test_aspp_five_branches_and_batch_one_training() -> None:
    aspp = ASPP(2048, 256, [1, 6, 12, 18]).train()
    assert aspp.n_branches == 5
    out = aspp(torch.randn(1, 2048, 8, 8))
    assert out.shape == (1, 256, 8, 8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in aspp.pool.modules())


def test_attention_gate_coefficients_and_output() -> None:
    ag = AttentionGate(32, 16)
    g, x = torch.randn(2, 32, 4, 4), torch.randn(2, 16, 8, 8)
    alpha = ag.coefficients(g, x)
    assert alpha.shape == (2, 1, 8, 8) and alpha.min() >= 0 and alpha.max() <= 1
    torch.testing.assert_close(ag(g, x), x * alpha)


@pytest.mark.parametrize("hw", [(64, 96), (128, 64)])
def test_dynsegnet_logits_shape(hw) -> None:
    net = build_model(NetworkConfig(**SMALL)).eval()
    out = net(torch.randn(2, 3, *hw))
    assert out.logits.shape == (2, 1, *hw) and out.features is not None


def test_full_paper_layout_size() -> None:
    net = build_model(NetworkConfig(arch="dynsegnet_unet", in_channels=3, attention_gates=True,
                                    residual_decoder=True, dynamic=DynamicConfig(mode="gates")))
    n = sum(p.numel() for p in net.parameters())
    assert 44.0e6 < n < 45.6e6  # METHODS.md 1.2: about 44.8 M
    assert net.gate_logits is not None and net.gate_logits.numel() == 13  # 4 skip + 4 res + 5 ASPP


@torch.no_grad()
def test_dynamic_gates_are_identity_at_init() -> None:
    torch.manual_seed(0)
    gated = build_model(NetworkConfig(**SMALL, dynamic=DynamicConfig(mode="gates"))).eval()
    plain = build_model(NetworkConfig(**SMALL)).eval()
    sd = {k: v for k, v in gated.state_dict().items() if not k.startswith("dyn.")}
    plain.load_state_dict(sd)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(gated(x).logits, plain(x).logits)
    gated.dyn.logits.fill_(1.0)  # gates moved away from 1: the output changes
    assert not torch.allclose(gated(x).logits, plain(x).logits)


def test_patchgan_shape_spectral_norm_and_imagegan() -> None:
    d = PatchGAN(4, 64, 3)
    with torch.no_grad():
        for _ in range(3):  # power iterations run in train-mode forwards
            out = d(torch.randn(1, 3, 512, 512), torch.rand(1, 1, 512, 512))
    assert out.shape == (1, 1, 62, 62)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    d.eval()
    for m in convs:
        assert hasattr(m, "parametrizations") and "weight" in m.parametrizations
        w = m.weight.detach().flatten(1)
        sigma = torch.linalg.matrix_norm(w, ord=2)
        assert abs(float(sigma) - 1.0) < 0.05
    img = ImageGAN(4, 16, 3)(torch.randn(3, 3, 64, 64), torch.rand(3, 1, 64, 64))
    assert img.shape == (3, 1)


# ---- SGDC (METHODS.md 3.7) -------------------------------------------------------------------
def test_sobel_is_a_fixed_buffer() -> None:
    sge = SGE(64, 32, bottleneck=16, fused=16, guide_ch=8)
    for prior in (sge.prior4, sge.prior1):
        assert prior.kx.tolist() == SOBEL_X and prior.ky.tolist() == SOBEL_Y
    names = {n for n, _ in sge.named_parameters()}
    assert not any(n.endswith(("kx", "ky")) for n in names)
    assert "prior4.kx" in sge.state_dict()
    before = sge.prior4.kx.clone()
    opt = torch.optim.SGD(sge.parameters(), lr=1.0)
    e, g = sge(torch.randn(2, 64, 4, 4), torch.randn(2, 32, 16, 16))
    (e.sum() + g.sum()).backward()
    opt.step()
    assert torch.equal(sge.prior4.kx, before)


@pytest.mark.parametrize("strides", [(4, 16), (8, 8)])
def test_sge_shapes(strides) -> None:
    s4, s1 = strides
    sge = SGE(64, 32, bottleneck=16, fused=16, guide_ch=8)
    e, g = sge(torch.randn(2, 64, 64 // s4, 64 // s4), torch.randn(2, 32, 64 // s1 * 4, 64 // s1 * 4))
    assert e.shape == (2, 1, 64 // s1 * 4, 64 // s1 * 4) and g.shape == (2, 8, 64 // s1 * 4, 64 // s1 * 4)


def test_sobel_modes() -> None:
    sge_sum = SGE(8, 8, bottleneck=6, fused=6, guide_ch=2, sobel_mode="sum")
    sge_dw = SGE(8, 8, bottleneck=6, fused=6, guide_ch=2, sobel_mode="depthwise")
    s = torch.randn(1, 6, 10, 10)
    m_sum = sge_sum.prior1.magnitude(s)
    m_dw = sge_dw.prior1.magnitude(s)
    assert all(torch.equal(m_sum[:, 0], m_sum[:, c]) for c in range(6))
    assert not torch.allclose(m_dw[:, 0], m_dw[:, 1])


def test_no_nan_gradient_on_constant_input() -> None:
    sge = SGE(8, 8, bottleneck=8, fused=8, guide_ch=4)
    x4 = torch.ones(1, 8, 4, 4, requires_grad=True)
    x1 = torch.ones(1, 8, 16, 16, requires_grad=True)
    e, g = sge(x4, x1)
    (e.sum() + g.sum()).backward()
    for t in [x4.grad, x1.grad] + [p.grad for p in sge.parameters() if p.grad is not None]:
        assert torch.isfinite(t).all()


def test_sgdc_shape_identity_softmax_and_no_pooling() -> None:
    blk = SGDC(32, guide_ch=8, heads=4, kernel=7)
    x, g = torch.randn(2, 32, 12, 10), torch.randn(2, 8, 6, 5)
    y = blk(x, g)
    assert y.shape == x.shape and (y - x).abs().max() < 1e-4
    _, _, k = blk.kernels(x, g)
    assert k.shape == (2, 4, 49, 120) and (k > 0).all()
    torch.testing.assert_close(k.sum(2), torch.ones(2, 4, 120))
    sge = SGE(16, 32)
    pools = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
    assert not any(isinstance(m, pools) for m in list(blk.modules()) + list(sge.modules()))


def test_sgdc_locality() -> None:
    torch.manual_seed(0)
    blk = SGDC(8, guide_ch=4, heads=2, kernel=5, ls_init=1.0).eval()
    x = torch.randn(1, 8, 16, 16)
    g = torch.randn(1, 4, 16, 16)
    q = (8, 8)
    base = blk(x, g)[..., q[0], q[1]]
    far = x.clone()
    far[..., :, 12:] += 5.0  # columns >= 12 are outside the 5x5 neighbourhood (radius 2) of column 8
    far[..., 12:, :] += 5.0
    torch.testing.assert_close(blk(far, g)[..., q[0], q[1]], base)
    near = x.clone()
    near[..., 9, 9] += 5.0
    assert not torch.allclose(blk(near, g)[..., q[0], q[1]], base)


def test_sgdc_inside_generators_gives_edge_logits() -> None:
    cfg = NetworkConfig(**{**SMALL, "sgdc": SgdcConfig(enabled=True, bottleneck=16, guide_ch=8)})
    out = build_model(cfg)(torch.randn(1, 3, 64, 64))
    assert out.edge_logits is not None and out.edge_logits.shape == (1, 1, 16, 16)
    seg = build_model(NetworkConfig(arch="segan_segmentor", in_channels=3, segan_width=8,
                                    sgdc=SgdcConfig(enabled=True, bottleneck=16, guide_ch=8)))
    assert seg(torch.randn(1, 3, 64, 64)).edge_logits.shape == (1, 1, 16, 16)


# ---- SegAN (METHODS.md 4.6) ------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(64, 64), (48, 80)])
def test_segan_segmentor_shape_and_range(hw) -> None:
    net = build_model(NetworkConfig(arch="segan_segmentor", in_channels=3, segan_width=16))
    out = net(torch.randn(2, 3, *hw))
    p = torch.sigmoid(out.logits)
    assert out.logits.shape == (2, 1, *hw) and p.min() >= 0 and p.max() <= 1


def test_critic_maps_and_multiscale_l1() -> None:
    c = SeganCritic(3, 64, 3)
    v = torch.randn(2, 3, 64, 64)
    feats = c.features(v)
    assert [tuple(f.shape[1:]) for f in feats] == [(3, 64, 64), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
    assert torch.equal(feats[0], v)
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    fa, fb = c.features(a), c.features(b)
    by_hand = sum((x - y).abs().mean() for x, y in zip(fa, fb)) / 4
    loss = multiscale_l1(c, a, b)
    torch.testing.assert_close(loss, by_hand)
    assert float(multiscale_l1(c, a, a)) == 0.0
    torch.testing.assert_close(multiscale_l1(c, b, a), loss)
    assert float(loss) >= 0
    assert float(multiscale_l1(c, a, b, "concat_code")) > 0


def test_concat_code_weights_the_critic_layers_as_the_released_code_does() -> None:
    """SegAN's released code concatenates the critic's layers (input included) with weights 1,
    1, 2, 2, 2, 2, 4 before one mean absolute difference: a difference in the last of seven
    layers counts four times one of the same size in the input."""

    class Layers:  # a critic whose seven "layers" are the input repeated: only one layer may differ
        def __init__(self, differ: int) -> None:
            self.differ = differ

        def features(self, v: torch.Tensor) -> list[torch.Tensor]:
            base = torch.zeros_like(v)
            return [v if i == self.differ else base for i in range(7)]

    a, b = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    per_layer = [float(multiscale_l1(Layers(i), a, b, "concat_code")) for i in range(7)]
    unit = 16 / (7 * 16)  # one layer of 16 elements differing by 1, over seven layers' 112 elements
    assert per_layer == pytest.approx([w * unit for w in (1, 1, 2, 2, 2, 2, 4)])
    assert float(multiscale_l1(Layers(6), a, b)) == pytest.approx(1 / 7)  # per-layer mean: every layer alike


def test_masking_broadcasts_over_channels() -> None:
    x = torch.randn(2, 3, 8, 8)
    m = torch.rand(2, 1, 8, 8)
    out = mask_image(x, m)
    for ch in range(3):
        torch.testing.assert_close(out[:, ch], x[:, ch] * m[:, 0])


# ---- the light default ----------------------------------------------------------------------
def test_unet_small_shapes_and_prior_bias() -> None:
    net = build_model(NetworkConfig(widths=[8, 16, 32], prior=0.02, attention_gates=True, residual_decoder=True))
    out = net(torch.randn(2, 4, 32, 48))
    assert out.logits.shape == (2, 1, 32, 48)
    assert abs(float(net.head.bias) - float(torch.logit(torch.tensor(0.02)))) < 1e-6


# ---- DynSegNet's parts are the ones METHODS.md 1 names ------------------------------------------
def test_aspp_branches_are_dilated_at_their_rates() -> None:
    from napari_lesionseg.core.models.blocks import ASPP

    aspp = ASPP(4, 8, [1, 2, 5], pool_norm="none").eval()
    convs = [b[0] for b in aspp.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2), (5, 5)]
    # behaviour, not only attributes: a point input reaches exactly the taps at +-rate
    x = torch.zeros(1, 4, 21, 21)
    x[0, :, 10, 10] = 1.0
    with torch.no_grad():
        resp = convs[2](x).abs().sum(dim=(0, 1))
    hit = {(r - 10, c - 10) for r, c in zip(*torch.nonzero(resp, as_tuple=True)) for r, c in [(int(r), int(c))]}
    assert hit == {(dr, dc) for dr in (-5, 0, 5) for dc in (-5, 0, 5)}
    # the image-pool conv has a bias when no norm follows it, none when GroupNorm does
    assert aspp.pool[1].bias is not None
    assert ASPP(4, 8, [1, 6], pool_norm="gn").pool[1].bias is None


@pytest.mark.parametrize(("kind", "blocks", "block_cls"), [
    ("resnet18", [2, 2, 2, 2], "BasicBlock"), ("resnet34", [3, 4, 6, 3], "BasicBlock"),
    ("resnet50", [3, 4, 6, 3], "Bottleneck")])
def test_resnet_encoder_layouts(kind: str, blocks: list[int], block_cls: str) -> None:
    from napari_lesionseg.core.models.network_config import EncoderConfig
    from napari_lesionseg.core.models.resnet import ResNetEncoder

    enc = ResNetEncoder(EncoderConfig(type=kind, width=8))
    layers = [enc.layer1, enc.layer2, enc.layer3, enc.layer4]
    assert [len(layer) for layer in layers] == blocks
    assert {type(b).__name__ for layer in layers for b in layer} == {block_cls}
    strides = [layer[0].conv1.stride if block_cls == "BasicBlock" else layer[0].conv2.stride for layer in layers]
    assert strides == [(1, 1), (2, 2), (2, 2), (2, 2)]


@pytest.mark.parametrize("kind", ["resnet34", "resnet50"])
def test_output_stride_16_trades_the_last_stride_for_dilation(kind: str) -> None:
    """DeepLab's output stride 16: layer4 keeps the resolution of layer3 and dilates its 3x3
    convolutions by 2, so its receptive field still grows as with the stride (a plain stride-1
    layer4 would see half as far)."""
    enc = ResNetEncoder(EncoderConfig(type=kind, width=8, output_stride=16)).eval()
    convs = [m for m in enc.layer4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(c.stride == (1, 1) and c.dilation == (2, 2) and c.padding == (2, 2) for c in convs)
    with torch.no_grad():
        f = enc(torch.zeros(1, 3, 128, 128))
    assert f[4].shape[-2:] == f[3].shape[-2:] == (8, 8)
    plain = ResNetEncoder(EncoderConfig(type=kind, width=8)).eval()
    assert all(m.dilation == (1, 1) for m in plain.modules() if isinstance(m, nn.Conv2d))


def test_sgdc_heads_own_their_channel_groups() -> None:
    """Head j's kernel acts on channel group j only: head 0 takes the centre tap, head 1 the
    left neighbour; a wrong head/channel grouping mixes them."""
    blk = SGDC(4, guide_ch=2, heads=2, kernel=3, ls_init=1.0).eval()
    with torch.no_grad():
        for m in (blk.weights, blk.local):
            m.weight.zero_()
            m.bias.zero_()
        blk.gamma2.zero_()
        c = 4
        blk.weights.bias[c: 2 * c] = 30.0  # a2: the dynamic branch fully open
        blk.weights.bias[2 * c + 4] = 30.0  # head 0: centre tap (k*k index 4)
        blk.weights.bias[2 * c + 9 + 3] = 30.0  # head 1: tap (row 1, col 0), the left neighbour
        x = torch.randn(1, 4, 6, 6)
        out = blk(x, torch.zeros(1, 2, 6, 6)) - x
        n = blk.norm1(x)
    torch.testing.assert_close(out[:, :2], n[:, :2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, 2:, :, 1:], n[:, 2:, :, :-1], atol=1e-5, rtol=1e-4)
