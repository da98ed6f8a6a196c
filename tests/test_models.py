"""The CIFAR ResNets, Wide ResNets and ResNet-50: parameter counts of the papers, shapes, the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from oblique.models import (
    MODELS,
    ModelDependencyError,
    UnknownModelError,
    get_model,
    input_shape,
    list_models,
)
from oblique.models.cifar_resnet import CifarResNet
from oblique.models.transformer1d import Transformer1D
from oblique.models.wrn import WideResNet
from oblique.recipes import RECIPES, recipe_for

try:
    import torchvision  # noqa: F401

    HAVE_TV = True
except ImportError:
    HAVE_TV = False


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# He et al. 2016, table 6 ("# params"): 0.27 M, 0.46 M, 0.66 M, 0.85 M, 1.7 M
@pytest.mark.parametrize(
    "depth, millions, tol",
    [(20, 0.27, 0.005), (32, 0.46, 0.005), (44, 0.66, 0.005), (56, 0.85, 0.005), (110, 1.7, 0.05)],
)
def test_cifar_resnet_parameter_counts(depth, millions, tol):
    assert _count(get_model(f"resnet{depth}", in_channels=3)) / 1e6 == pytest.approx(millions, abs=tol)


# Zagoruyko & Komodakis 2016, tables 1 and 4: WRN-28-10 36.5 M, WRN-16-8 11.0 M, WRN-40-4 8.9 M
@pytest.mark.parametrize("name, millions", [("wrn28-10", 36.5), ("wrn16-8", 11.0), ("wrn40-4", 8.9)])
def test_wrn_parameter_counts(name, millions):
    with torch.device("meta"):  # counts only: no memory for 36.5 M floats
        m = get_model(name, in_channels=3)
    assert _count(m) / 1e6 == pytest.approx(millions, abs=0.05)


def test_option_a_shortcuts_have_no_parameters():
    m = CifarResNet(20)
    assert sum(isinstance(x, nn.Conv2d) for x in m.modules()) == 19  # 1 + 6·3 convs: no 1×1 projections
    assert all(not isinstance(x, nn.Conv2d) or x.kernel_size == (3, 3) for x in m.modules())


@pytest.mark.parametrize("name", ["resnet20", "wrn16-1", "wrn28-10-drop"])
def test_forward_shapes_and_backward(name):
    torch.manual_seed(0)
    m = get_model(name, num_classes=7, in_channels=3) if name != "wrn28-10-drop" else None
    if m is None:  # keep it small: the dropout variant's block structure, at width 1
        m = WideResNet(10, 1, num_classes=7, dropout=0.3)
    x = torch.randn(2, *input_shape(name))
    out = m(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    m = WideResNet(10, 1, dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


def test_generic_wrn_names_and_validation():
    assert isinstance(get_model("wrn10-2", in_channels=3), WideResNet)
    assert input_shape("wrn10-2") == (3, 32, 32)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(27, 1)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(21)
    with pytest.raises(UnknownModelError, match="resnet110"):
        get_model("resnet111")


def test_registry_has_the_papers_models_and_their_input_shapes():
    for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn28-10", "resnet50"):
        assert name in list_models()
    assert all(len(input_shape(n)) >= 2 for n in MODELS)
    assert input_shape("resnet50") == (3, 224, 224)


@pytest.mark.skipif(HAVE_TV, reason="torchvision is installed")
def test_resnet50_without_torchvision_is_one_clear_line():
    with pytest.raises(ModelDependencyError) as e:
        get_model("resnet50", num_classes=1000, in_channels=3)
    assert "install oblique[vision]" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, UnknownModelError)  # the CLI prints it as a one-line user error


@pytest.mark.skipif(not HAVE_TV, reason="needs torchvision (oblique[vision])")
def test_resnet50_parameter_count():  # pragma: no cover - torchvision not installed here
    with torch.device("meta"):
        m = get_model("resnet50", num_classes=1000, in_channels=3)
    assert _count(m) / 1e6 == pytest.approx(25.6, abs=0.05)


def test_transformer1d_shapes_and_layers():
    torch.manual_seed(0)
    m = get_model("transformer1d")
    assert isinstance(m, Transformer1D) and input_shape("transformer1d") == (1, 40)
    assert m(torch.randn(3, 1, 40)).shape == (3, 10)
    assert get_model("transformer1d", num_classes=7)(torch.randn(2, 1, 40)).shape == (2, 7)
    attn = [x for x in m.modules() if isinstance(x, nn.MultiheadAttention)]
    assert len(attn) == 2 and all(a.batch_first and a.num_heads == 4 for a in attn)
    assert all(a.in_proj_weight.shape == (96, 32) and isinstance(a.out_proj, nn.Linear) for a in attn)
    linears = [x for x in m.modules() if type(x) is nn.Linear]  # the MLPs' and the classifier
    assert [tuple(x.weight.shape) for x in linears] == [(64, 32), (32, 64)] * 2 + [(10, 32)]
    assert isinstance(m.embed, nn.Conv1d) and m.embed.kernel_size == m.embed.stride == (4,)
    assert isinstance(m.pos, nn.Parameter) and m.pos.shape == (1, 10, 32)
    assert not any(isinstance(x, nn.Embedding) for x in m.modules())


def test_transformer1d_is_registered_with_a_recipe():
    assert "transformer1d" in list_models() and "transformer1d" in RECIPES
    assert recipe_for("transformer1d")["optimizer"] == "adam"


def test_transformer1d_learns_a_tiny_batch():
    torch.manual_seed(0)
    m = get_model("transformer1d")
    x, y = torch.randn(16, 1, 40), torch.randint(0, 10, (16,))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = nn.functional.cross_entropy(m(x), y)
    first.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    opt.step()
    for _ in range(29):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    with torch.no_grad():
        after = nn.functional.cross_entropy(m(x), y)
    assert after < 0.5 * first  # 30 Adam steps fit 16 random labels well below the starting loss


def test_transformer1d_checks_its_arguments():
    with pytest.raises(ValueError, match="multiple of patch"):
        Transformer1D(length=42)
    with pytest.raises(ValueError, match="multiple of heads"):
        Transformer1D(dim=30)
