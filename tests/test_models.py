"""Parameter counts and structure of the architectures defined in the notebook's `model` cells."""
import pytest
import torch

import helpers as H


@pytest.mark.parametrize("factory, expected", [("resnet18", 11_173_962), ("option1", 2_797_610),
                                               ("option2", 4_977_226)])
def test_exact_parameter_counts(models, factory, expected):
    model = models[factory]()
    assert H.count_parameters(model) == expected
    assert H.torchsummary_total(model, torch.device("cpu")) == expected


def test_trained_models_are_under_five_million(models):
    for factory in ("option1", "option2", "fast_resnet"):
        assert H.count_parameters(models[factory]()) < 5_000_000


@pytest.mark.parametrize("factory", ["option1", "option2", "resnet18", "fast_resnet"])
def test_forward_shape(models, factory):
    model = models[factory]().eval()
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_option2_layout(models):
    blocks = [m for m in models["option2"]().modules() if isinstance(m, models["BasicBlock"])]
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 256, 512]


def test_basic_block_adds_its_input(models):
    """With the residual branch silenced (last BN scale 0), a block is relu(shortcut(x))."""
    block = models["BasicBlock"](16, 16).eval()
    torch.nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(block(x), torch.relu(x), atol=1e-6)


@pytest.mark.parametrize("widths, blocks", [((80, 160, 320, 384), (1, 0, 1)), ((64, 128, 256, 352), (1, 1, 1))])
def test_fast_resnet_layouts(models, widths, blocks):
    """The final model's parameter count, from its layout: per stage a widening 3x3 convolution and two per
    residual block, each followed by BatchNorm (weight and bias), plus the stem and the bias-free classifier."""
    w0 = widths[0]
    expected = 3 * 9 * w0 + 2 * w0 + 10 * widths[-1]
    for w_in, w_out, n in zip(widths, widths[1:], blocks):
        expected += (9 * w_in * w_out + 2 * w_out) + n * 2 * (9 * w_out * w_out + 2 * w_out)
    model = models["fast_resnet"](widths, blocks)
    assert H.count_parameters(model) == H.torchsummary_total(model, torch.device("cpu")) == expected < 5_000_000
    assert len([m for m in model.modules() if isinstance(m, models["Residual"])]) == sum(blocks)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_final_model_is_residual(models):
    model = models["fast_resnet"]()
    residuals = [m for m in model.modules() if isinstance(m, models["Residual"])]
    assert len(residuals) == 2
    block = residuals[0].eval()
    x = torch.randn(2, block.body[0][0].in_channels, 8, 8)
    torch.nn.init.zeros_(block.body[1][0].weight)   # the branch's last convolution
    torch.nn.init.zeros_(block.body[1][1].bias)     # and its BN shift: the branch outputs GELU(0) = 0
    assert torch.allclose(block(x), x, atol=1e-6)
