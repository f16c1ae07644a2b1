"""Parameter counts and structure of the architectures defined in the notebook's `model` cells, and the registry
(`NETWORKS`) through which every other part of the project builds them."""
import json

import pytest
import torch

import helpers as H
from cifar10_resnet.checks import BadInput
from cifar10_resnet.store import ResultsStore
from conftest import ROOT


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


# ---------------------------------------------------------------------------------------------------
# The registry: a run's "arch" names its network there and nowhere else
# ---------------------------------------------------------------------------------------------------


def test_the_registry_holds_every_network_a_stored_run_names(models):
    """Each stored run's "arch" (results/ and its subfolders) is registered, and the network built from its
    configuration has the parameters the run stored: a name and its builder cannot disagree silently."""
    networks, archs = models["NETWORKS"], set()
    assert set(networks.labels()) >= {"resnet18", "option1", "option2", "fast_resnet", "air_resnet"}
    built: dict[str, int] = {}
    stores = [ROOT / "results", *sorted(p for p in (ROOT / "results").iterdir() if p.is_dir())]
    for name, summary in ((n, s) for folder in stores for n, s in ResultsStore(folder).summaries().items()):
        config = summary["config"]
        key = json.dumps({k: config.get(k) for k in ("arch", "widths", "blocks")}, sort_keys=True)
        if key not in built:
            built[key] = H.count_parameters(networks.build(config, name))
        assert built[key] == summary["trainable_params"], name
        archs.add(config["arch"])
    assert archs >= {"option1", "option2", "fast_resnet"}  # the six experiments and the final model's runs


def test_the_registry_builds_a_configuration_at_its_sizes(models):
    networks = models["NETWORKS"]
    assert networks["option2"].sizes() == {"widths": (64, 128, 256, 512), "blocks": (2, 1, 1, 1)}
    assert networks["fast_resnet"].label == "FastResNet" and networks["air_resnet"].label == "AirResNet"
    model = networks.build({"arch": "fast_resnet", "widths": [64, 128, 256, 352], "blocks": [1, 1, 1]})
    assert H.count_parameters(model) == H.count_parameters(models["fast_resnet"]((64, 128, 256, 352), (1, 1, 1)))
    # a configuration without sizes gets the builder's defaults: the six experiments' configurations
    assert H.count_parameters(networks.build({"arch": "option1"})) == 2_797_610


def test_an_unknown_arch_or_size_is_one_error_before_anything_is_built(models):
    networks = models["NETWORKS"]
    with pytest.raises(BadInput, match=r"model 7: config 'arch' is 'option3', which names no network; the "
                                         r"registered ones: air_resnet, resnet18, option1, option2, .*fast_resnet.* "
                                         r"\(a new one: decorate its builder with @NETWORKS.register"):
        networks.builder({"arch": "option3"}, "model 7")
    with pytest.raises(BadInput, match="config gives blocks but air_resnet's builder takes only widths"):
        networks.builder({"arch": "air_resnet", "blocks": [1, 1, 1]}, "a run")
    with pytest.raises(BadInput, match="config .arch. is None, which names no network"):
        networks.builder({"epochs": 1}, "a run")


def test_a_registered_builder_is_returned_unchanged_and_table_1_comes_from_the_registry(models):
    networks = H.registry()

    @networks.register("ResNet-10")
    def resnet10(widths=(64, 128, 256, 512), blocks=(1, 1, 1, 1)):
        return models["ResNet"](widths, blocks)

    assert resnet10 is networks["resnet10"].build and "resnet10" in networks
    params = {"ResNet-10": H.count_parameters(resnet10())}
    table = H.network_table(networks, {"ResNet-10": {"arch": "resnet10"}}, params)
    assert table.loc["ResNet-10"].to_dict() == {
        "channels per layer": "64, 128, 256, 512", "blocks per layer": "1, 1, 1, 1",
        "trainable params": f"{params['ResNet-10']:,}", "GFLOP per image": f"{H.flops_per_image(resnet10()) / 1e9:.2f}",
        "under 5M": True}
