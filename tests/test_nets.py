import pytest
import torch

from colorlab.nets import NETS, build_net


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_network_shapes_gradients_and_bad_sizes(name):
    torch.manual_seed(0)
    channels = 4 if name == "siggraph17" else 1  # siggraph17 takes L, hint ab and hint mask
    net = build_net(name, out_channels=5, in_channels=channels)
    stride, multiple = net.output_stride, net.size_multiple
    for h, w in [(32, 32), (48, 64)]:
        out = net(torch.randn(2, channels, h, w))
        if isinstance(out, tuple):  # siggraph17: (ab before tanh, class logits at 1/4)
            assert out[0].shape == (2, 2, h, w) and out[1].shape == (2, 5, h // 4, w // 4)
            out = torch.cat([out[0].flatten(), out[1].flatten()])
        else:
            assert out.shape == (2, 5, h // stride, w // stride)
        assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"parameters without gradient: {missing}"
    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        net(torch.randn(1, channels, 32 + multiple // 2 + 1, 32))


def test_unknown_network_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: .*plain"):
        build_net("resnet9000", out_channels=2)


@pytest.mark.parametrize("output_stride", [1, 2, 4])
def test_unet_stops_its_decoder_at_the_output_stride(output_stride):
    net = build_net("unet", out_channels=3, output_stride=output_stride)
    assert net(torch.randn(1, 1, 32, 48)).shape == (1, 3, 32 // output_stride, 48 // output_stride)
    with pytest.raises(ValueError, match="output_stride must be a power of 2"):
        build_net("unet", out_channels=3, output_stride=8)


def test_koala_fuses_the_embedding_and_checks_its_shape():
    torch.manual_seed(0)
    net = build_net("koala", out_channels=2, width=8, embed_dim=10).eval()
    l = torch.randn(2, 1, 32, 32)
    a, b = net(l, torch.zeros(2, 10)), net(l, torch.ones(2, 10))
    assert a.shape == (2, 2, 32, 32) and not torch.allclose(a, b)  # the embedding changes the output
    with pytest.raises(ValueError, match=r"needs an embedding of shape \(B, 10\). Got None"):
        net(l)
    with pytest.raises(ValueError, match=r"Got \(2, 7\)"):
        net(l, torch.zeros(2, 7))


def test_eccv16_paper_size_has_zhangs_parameter_count():
    net = build_net("eccv16", out_channels=313, width=64)
    millions = sum(p.numel() for p in net.parameters()) / 1e6
    assert 30 < millions < 34  # the released caffe model has 32.2 M


def test_koala_fusion_equals_a_1x1_conv_over_the_concatenated_grid():
    import torch.nn.functional as F

    torch.manual_seed(1)
    net = build_net("koala", out_channels=2, width=8, embed_dim=10).eval()
    features, embedding = torch.randn(2, 32, 4, 4), torch.randn(2, 10)
    grid = embedding[:, :, None, None].expand(-1, -1, 4, 4)
    reference = F.conv2d(torch.cat([features, grid], dim=1), net.fusion_weight())
    fast = net.fuse_features(features) + net.fuse_embedding(embedding)[:, :, None, None]
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_siggraph17_paper_size_has_the_released_parameter_count_and_needs_hint_channels():
    net = build_net("siggraph17", out_channels=529, in_channels=4, width=64)
    millions = sum(p.numel() for p in net.parameters()) / 1e6
    assert 34.0 < millions < 34.4  # DESIGN.md: the released generator has 34.2 M
    with pytest.raises(ValueError, match="hints.enabled=true"):
        build_net("siggraph17", out_channels=529, in_channels=1)
