import pytest
import torch

from colorlab.nets import NETS, build_net


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_network_shapes_gradients_and_bad_sizes(name):
    torch.manual_seed(0)
    net = build_net(name, out_channels=5)
    stride, multiple = net.output_stride, net.size_multiple
    for h, w in [(32, 32), (48, 64)]:
        out = net(torch.randn(2, 1, h, w))
        assert out.shape == (2, 5, h // stride, w // stride)
        assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"parameters without gradient: {missing}"
    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        net(torch.randn(1, 1, 32 + multiple // 2 + 1, 32))


def test_unknown_network_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: .*plain"):
        build_net("resnet9000", out_channels=2)


@pytest.mark.parametrize("output_stride", [1, 2, 4])
def test_unet_stops_its_decoder_at_the_output_stride(output_stride):
    net = build_net("unet", out_channels=3, output_stride=output_stride)
    assert net(torch.randn(1, 1, 32, 48)).shape == (1, 3, 32 // output_stride, 48 // output_stride)
    with pytest.raises(ValueError, match="output_stride must be a power of 2"):
        build_net("unet", out_channels=3, output_stride=8)
