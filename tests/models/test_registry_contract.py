"""Registry-wide contracts, over every name in `list_models()` (a newly registered model is covered
without editing this file): it runs on 98x40 features, Conv+BN+ReLU fusion computes the same
function, every `model.*` config value reaches the model (or the config is refused), and the
built model shows the hyper-parameters it was really built with."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from tinyconv.config import ConfigError, ModelConfig, load_config
from tinyconv.models import build_model, create_model, list_models, register_model
from tinyconv.models.fusion import FusedConvBNReLU2d, fuse_tiny_conv
from tinyconv.models.registry import CONFIG_KWARGS, ModelError, model_entry
from tinyconv.models.tinyconv import ConvBNReLU

MODELS = list_models()
DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
# Non-default values for each config field: the first one that is neither the default nor the
# variant's fixed value is used.
ALTERNATIVES: dict[str, list[Any]] = {
    "tiny_conv_use_depthwise": [False, True],
    "width_multiplier": [0.25, 1.5],
    "strided_blocks": [2, 0],
    "time_dilations": [(1, 2, 4, 8), (1, 1, 2, 2)],
    "dropout": [0.5, 0.0],
}


def _alternative(field: str, avoid: tuple[Any, ...]) -> Any:
    for value in ALTERNATIVES[field]:
        if all(value != a for a in avoid):
            return value
    return None


def _with_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    return model


def test_every_model_config_field_has_a_route_to_the_model() -> None:
    assert set(CONFIG_KWARGS) == set(DEFAULTS) - {"name"}
    assert set(ALTERNATIVES) == set(CONFIG_KWARGS)


def test_the_registry_lists_both_families() -> None:
    assert {"tinyconv", "tinyconv_v2_075", "tinyconv_test", "stream_tinyconv", "stream_tinyconv_test"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_on_one_second_of_features(name: str) -> None:
    model = build_model(ModelConfig(name=name), num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(4, 98, 40) * 26).shape == (4, 3)


@pytest.mark.parametrize("name", MODELS)
def test_fused_equals_unfused_in_eval(name: str) -> None:
    torch.manual_seed(0)
    model = _with_bn_statistics(build_model(ModelConfig(name=name), num_classes=3)).eval()
    fused = fuse_tiny_conv(model).eval()
    assert any(isinstance(m, FusedConvBNReLU2d) for m in fused.modules())
    assert not any(isinstance(m, ConvBNReLU) for m in fused.modules())  # every unit fused
    x = torch.rand(8, 98, 40, generator=torch.Generator().manual_seed(1)) * 26
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_built_model_shows_the_config_it_was_built_from(name: str) -> None:
    entry = model_entry(name)
    config = ModelConfig(name=name)
    model = build_model(config, num_classes=2)
    for field, kwarg in CONFIG_KWARGS.items():
        if entry.takes(kwarg):
            expected = getattr(config, field)
        elif kwarg in entry.fixed:
            expected = entry.fixed[kwarg]
        else:
            assert kwarg not in model.hparams, f"{name} takes no {kwarg}"
            continue
        got = model.hparams[kwarg]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == (
            tuple(expected) if isinstance(expected, (list, tuple)) else expected), (name, field)
    assert model.hparams["num_classes"] == 2 and model.hparams["num_frames"] == 98


@pytest.mark.parametrize("name", MODELS)
def test_every_field_a_model_takes_changes_the_model(name: str) -> None:
    """A value forwarded but ignored by the factory (the original bug: dilations recorded in the
    checkpoint, never built) shows up here: the built model must differ."""
    entry = model_entry(name)
    x = torch.rand(4, 98, 40, generator=torch.Generator().manual_seed(0)) * 26
    for field, kwarg in CONFIG_KWARGS.items():
        if not entry.takes(kwarg):
            continue
        value = _alternative(field, (DEFAULTS[field],))
        torch.manual_seed(0)
        base = build_model(ModelConfig(name=name), num_classes=2)
        torch.manual_seed(0)
        other = build_model(ModelConfig(name=name, **{field: value}), num_classes=2)
        assert model_entry(name).takes(kwarg) and other.hparams[kwarg] == value
        shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
        if shapes(base) != shapes(other):
            continue
        other.load_state_dict(base.state_dict())  # same weights: only the hyper-parameter differs
        base.train(), other.train()  # dropout acts in train mode; same seed, same masks
        torch.manual_seed(1)
        a = base(x)
        torch.manual_seed(1)
        b = other(x)
        assert not torch.allclose(a, b), f"model.{field}={value} did not change {name}"


def _refusals() -> list[tuple[str, str, Any]]:
    """(model, config field, value) for every non-default value a model would not use."""
    cases = []
    for name in MODELS:
        entry = model_entry(name)
        for field, kwarg in CONFIG_KWARGS.items():
            if not entry.takes(kwarg):
                value = _alternative(field, (DEFAULTS[field], entry.fixed.get(kwarg)))
                if value is not None:  # None: only the default or the fixed value (V1's depthwise toggle)
                    cases.append((name, field, value))
    return cases


REFUSALS = _refusals()


def test_the_refusal_cases_cover_fixed_and_missing_fields() -> None:
    pairs = {(name, field) for name, field, _ in REFUSALS}
    assert {("tinyconv_v2_075", "width_multiplier"), ("tinyconv_test", "time_dilations"),
            ("stream_tinyconv", "time_dilations"), ("stream_tinyconv_v1", "strided_blocks")} <= pairs


@pytest.mark.parametrize(("name", "field", "value"), REFUSALS)
def test_a_config_value_the_model_would_not_use_is_refused(name: str, field: str, value: Any) -> None:
    why = "contradicts" if CONFIG_KWARGS[field] in model_entry(name).fixed else "has no effect on"
    with pytest.raises(ConfigError, match=rf"^model\.{field}=.* {why} model '{name}'"):
        build_model(ModelConfig(name=name, **{field: value}), num_classes=2)


def test_variant_width_contradiction_fails_at_config_load_naming_field_and_model() -> None:
    with pytest.raises(ConfigError, match=r"^model\.width_multiplier=1\.0 contradicts model 'tinyconv_v2_075', "
                                          r"which fixes width_multiplier=0\.75: set model\.width_multiplier to 0\.75, "
                                          r"leave it out, or use a model that takes it \('tinyconv', "):
        load_config(None, ["model.name=tinyconv_v2_075", "model.width_multiplier=1.0"])


def test_a_written_default_that_contradicts_the_variant_is_refused(tmp_path: Path) -> None:
    """`width_multiplier: 0.5` is the field's default, but written next to tinyconv_v2_075 (which
    builds 0.75) it is a contradiction, in a file, in --set and in the UI panel; left out, or
    written as 0.75, it loads."""
    from tinyconv.ui.panel_config import config_to_values, panel_fields, values_to_config

    assert DEFAULTS["width_multiplier"] == 0.5
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: tinyconv_v2_075\n  width_multiplier: 0.5\n")
    refused = r"^model\.width_multiplier=0\.5 contradicts model 'tinyconv_v2_075', which fixes width_multiplier=0\.75"
    with pytest.raises(ConfigError, match=refused):
        load_config(path)
    with pytest.raises(ConfigError, match=refused):
        load_config(None, ["model.name=tinyconv_v2_075", "model.width_multiplier=0.5"])
    assert load_config(None, ["model.name=tinyconv_v2_075"]).model.width_multiplier == 0.5  # not written
    assert load_config(None, ["model.name=tinyconv_v2_075", "model.width_multiplier=0.75"])
    # A written default on a field the model neither takes nor fixes stays accepted (saved configs write every field).
    assert load_config(None, ["model.name=stream_tinyconv", f"model.time_dilations={list(DEFAULTS['time_dilations'])}"])
    # The panel shows what the variant builds, so a loaded config validates unchanged; a contradiction is refused.
    specs = panel_fields()
    values = config_to_values(load_config(None, ["model.name=tinyconv_v2_075"]), specs)
    width = [s.key for s in specs].index("model.width_multiplier")
    assert values[width] == 0.75 and values_to_config(values, specs).model.width_multiplier == 0.75
    values[width] = 0.5
    with pytest.raises(ConfigError, match=refused):
        values_to_config(values, specs)


def test_time_dilations_on_a_streaming_model_fail_at_config_load() -> None:
    with pytest.raises(ConfigError, match=r"^model\.time_dilations=\[1, 2, 4, 8\] has no effect on model "
                                          r"'stream_tinyconv', which does not take time_dilations"):
        load_config(None, ["model.name=stream_tinyconv", "model.time_dilations=[1,2,4,8]"])


def test_dilations_reach_a_named_variant() -> None:
    """The issue's case: `tinyconv_v2_075` with dilations trained an undilated model."""
    cfg = load_config(None, ["model.name=tinyconv_v2_075", "model.time_dilations=[1,2,4,8]"])
    model = build_model(cfg.model, 2, cfg.frontend)
    depthwise = [block[0][0] for block in model.blocks]  # each block's 3x3 (depthwise) conv
    assert [conv.dilation[0] for conv in depthwise] == [1, 2, 4, 8]
    assert model.width == 48 and model.hparams["width_multiplier"] == 0.75


def test_create_model_refuses_unknown_and_contradicting_keywords() -> None:
    with pytest.raises(ModelError, match=r"^model 'tinyconv_v2_075' fixes width_multiplier=0\.75; "
                                         r"got width_multiplier=1\.0$"):
        create_model("tinyconv_v2_075", num_classes=2, width_multiplier=1.0)
    with pytest.raises(ModelError, match=r"^model 'stream_tinyconv' takes no time_dilations \(it takes "):
        create_model("stream_tinyconv", num_classes=2, time_dilations=(1, 2, 4, 8))
    assert create_model("tinyconv_v2_075", num_classes=2, width_multiplier=0.75).width == 48


def test_a_model_that_hides_its_hyper_parameters_cannot_register() -> None:
    with pytest.raises(ModelError, match=r"register_model\(opaque_model\): a factory taking \*\*kwargs must "
                                         r"annotate its return type"):

        @register_model
        def opaque_model(**kwargs):
            return nn.Linear(1, 1)

    with pytest.raises(ModelError, match=r"register_model\(typo_model\): fixed names \['widht'\], which the "
                                         r"model does not take"):

        @register_model(fixed={"widht": 2})
        def typo_model(*, num_classes: int, width: int = 1) -> nn.Module:
            return nn.Linear(width, num_classes)

    assert "opaque_model" not in list_models() and "typo_model" not in list_models()


def test_the_saved_config_records_the_variants_fixed_values(tiny_cfg: Any) -> None:
    """A tinyconv_v2_075 checkpoint says width 0.75 and depthwise (the field defaults are 0.5 and
    the V1/V2 default), so a reader of config.yaml or the checkpoint sees what was built."""
    from tinyconv.checkpoint import load_checkpoint, model_from_checkpoint
    from tinyconv.config import load_config, replace
    from tinyconv.models.registry import resolved_model_config
    from tinyconv.trainer.run import train

    assert resolved_model_config(ModelConfig(name="tinyconv_v2_075")).width_multiplier == 0.75
    cfg = replace(tiny_cfg, model={"name": "tinyconv_v2_075", "width_multiplier": ModelConfig().width_multiplier},
                  train={"epochs": 1})
    ckpt = load_checkpoint(train(cfg).checkpoint_path)
    assert (ckpt.config.model.width_multiplier, ckpt.config.model.tiny_conv_use_depthwise) == (0.75, True)
    assert load_config(Path(cfg.train.out_dir) / "config.yaml").model.width_multiplier == 0.75
    assert model_from_checkpoint(ckpt).width == 48
