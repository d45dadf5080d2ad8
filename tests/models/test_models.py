from __future__ import annotations

import pytest
import torch

from tinyconv.config import ModelConfig
from tinyconv.models import build_model, create_model, list_models, register_model


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Exact parameter counts (2 classes). Changing the architecture must update these on purpose.
EXPECTED = {"tinyconv_v1": 150_786, "tinyconv_v2": 22_530, "tinyconv_v2_050": 7_170, "tinyconv_test": 690}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_parameter_counts_and_shapes(name: str) -> None:
    model = create_model(name, num_classes=2).eval()
    assert n_params(model) == EXPECTED[name]
    x = torch.randn(3, 98, 40)
    assert model(x).shape == (3, 2)
    maps = model.forward_features(x)
    assert [m.shape[1] for m in maps] == model.feature_dims
    assert maps[-1].shape[2:] == (25, 10)


@pytest.mark.parametrize("width", [0.5, 0.75, 1.0, 1.5])
def test_v2_has_at_least_70_percent_fewer_parameters(width: float) -> None:
    v1 = n_params(create_model("tinyconv", num_classes=12, use_depthwise=False, width_multiplier=width))
    v2 = n_params(create_model("tinyconv", num_classes=12, use_depthwise=True, width_multiplier=width))
    assert v2 <= 0.3 * v1, (v1, v2)


def test_config_toggle_selects_depthwise() -> None:
    v2 = build_model(ModelConfig(tiny_conv_use_depthwise=True, width_multiplier=1.0), 2)
    v1 = build_model(ModelConfig(tiny_conv_use_depthwise=False, width_multiplier=1.0), 2)
    assert n_params(v2) == EXPECTED["tinyconv_v2"] and n_params(v1) == EXPECTED["tinyconv_v1"]
    assert any(m.groups > 1 for m in v2.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(m.groups == 1 for m in v1.modules() if isinstance(m, torch.nn.Conv2d))


def test_registry_errors() -> None:
    assert "tinyconv_v2_075" in list_models("tinyconv_v2*")
    with pytest.raises(ValueError, match=r"unknown model 'tinyconv_v3'; did you mean .*tinyconv_v"):
        create_model("tinyconv_v3", num_classes=2)
    with pytest.raises(ValueError, match="already registered"):

        @register_model
        def tinyconv_v2(**kwargs):
            return None

    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        create_model("tinyconv_test", num_classes=1)


def test_strided_blocks_shrink_the_map_not_the_parameters() -> None:
    base = build_model(ModelConfig(width_multiplier=1.0), 2)
    strided = build_model(ModelConfig(width_multiplier=1.0, strided_blocks=3), 2)
    assert n_params(strided) == n_params(base) == EXPECTED["tinyconv_v2"]
    x = torch.randn(2, 98, 40)
    assert base.forward_features(x)[-1].shape[2:] == (25, 10)
    assert strided.forward_features(x)[-1].shape[2:] == (7, 3)
    assert strided(x).shape == (2, 2)
    with pytest.raises(ValueError, match="strided_blocks must be in"):
        create_model("tinyconv", num_classes=2, strided_blocks=5)


def test_time_dilations_widen_the_receptive_field_not_the_parameters() -> None:
    base = build_model(ModelConfig(width_multiplier=1.0), 2).eval()
    dilated = build_model(ModelConfig(width_multiplier=1.0, time_dilations=(1, 2, 4, 4)), 2).eval()
    assert n_params(dilated) == n_params(base)
    dilated.load_state_dict(base.state_dict())  # same weights: only the dilation differs

    def frames_seen(model: torch.nn.Module) -> int:
        """Input frames that move the centre output of the last block (its receptive field)."""
        x = torch.randn(1, 98, 40, generator=torch.Generator().manual_seed(0)).requires_grad_()
        out = model.forward_features(x)[-1]
        out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
        return int((x.grad.abs().sum(dim=2) > 0).sum())

    assert dilated.forward_features(torch.randn(2, 98, 40))[-1].shape[2:] == (25, 10)
    assert frames_seen(base) <= 40 and frames_seen(dilated) >= 90
    with pytest.raises(ValueError, match="time_dilations must be 4 integers"):
        create_model("tinyconv", num_classes=2, time_dilations=(1, 2))
