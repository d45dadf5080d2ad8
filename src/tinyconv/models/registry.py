"""A model registry in the style of timm: register by name, create by name, list names.

Each entry knows which hyper-parameters its model takes (from the factory's signature, or from
the model class its factory returns when the factory only forwards `**kwargs`), which ones the
variant fixes (`tinyconv_v2_075` is depthwise at width 0.75: the name says so) and which
defaults it changes. That is the contract `build_model` checks a `ModelConfig` against: every
`model.*` value reaches the model, or the config is refused naming the field and the model.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from tinyconv.errors import TinyconvError

if TYPE_CHECKING:
    from tinyconv.config import FrontendConfig, ModelConfig

ModelFactory = Callable[..., nn.Module]

# ModelConfig field -> the model keyword it sets. Every field but `name` is here (a test checks),
# so a new config field cannot be silently dropped on its way to the model.
CONFIG_KWARGS: dict[str, str] = {
    "tiny_conv_use_depthwise": "use_depthwise",
    "width_multiplier": "width_multiplier",
    "strided_blocks": "strided_blocks",
    "time_dilations": "time_dilations",
    "dropout": "dropout",
}


class ModelError(TinyconvError, ValueError):
    """An unknown model name, or keyword arguments a registered model does not take or fixes."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its factory and its hyper-parameter contract."""

    name: str
    factory: ModelFactory
    arch: type[nn.Module] | None  # the class the factory builds, when it forwards **kwargs to it
    params: tuple[str, ...]  # every keyword the model takes
    fixed: Mapping[str, Any]  # values the variant pins (create_model refuses others)
    defaults: Mapping[str, Any]  # the variant's defaults (create_model's kwargs override them)

    def takes(self, kwarg: str) -> bool:
        """True if a caller may set `kwarg` (the model takes it and the variant does not fix it)."""
        return kwarg in self.params and kwarg not in self.fixed


_REGISTRY: dict[str, ModelEntry] = {}


def _signature_of(fn: ModelFactory) -> tuple[type[nn.Module] | None, inspect.Signature]:
    sig = inspect.signature(fn)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None, sig
    try:
        arch = typing.get_type_hints(fn).get("return")
    except Exception:  # noqa: BLE001 (an unresolvable annotation is the same as none)
        arch = None
    if not (isinstance(arch, type) and issubclass(arch, nn.Module)):
        raise ModelError(
            f"register_model({fn.__name__}): a factory taking **kwargs must annotate its return type with the "
            "model class it builds, so the registry knows which hyper-parameters the model takes"
        )
    return arch, inspect.signature(arch)


def register_model(
    fn: ModelFactory | None = None,
    /,
    *,
    fixed: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Any:
    """Decorator: register `fn` under its function name. A duplicate name is an error.

    `@register_model` or `@register_model(fixed={...}, defaults={...})`. `fixed`: hyper-parameters
    the variant pins (a config or caller asking for another value is refused); `defaults`: the
    variant's own defaults. The registry passes both to the factory, so a factory body only
    builds the model (`return TinyConvWakeword(**kwargs)`) and `model.hparams` is exact.
    """

    def register(f: ModelFactory) -> ModelFactory:
        name = f.__name__
        if name in _REGISTRY:
            raise ModelError(f"model {name!r} is already registered")
        arch, sig = _signature_of(f)
        params = tuple(p.name for p in sig.parameters.values()
                       if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
        for what, values in (("fixed", fixed or {}), ("defaults", defaults or {})):
            unknown = sorted(set(values) - set(params))
            if unknown:
                raise ModelError(f"register_model({name}): {what} names {unknown}, which the model does not take")
        _REGISTRY[name] = ModelEntry(name, f, arch, params, dict(fixed or {}), dict(defaults or {}))
        return f

    return register(fn) if fn is not None else register


def model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; ModelError with the closest names otherwise."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} (available: {', '.join(list_models())})")
    return _REGISTRY[name]


def _same(a: Any, b: Any) -> bool:
    """Equal as config values: lists and tuples alike, booleans only equal to booleans."""

    def norm(v: Any) -> Any:
        return tuple(v) if isinstance(v, (list, tuple)) else v

    return bool(norm(a) == norm(b)) and isinstance(a, bool) == isinstance(b, bool)


def _yaml(value: Any) -> str:
    """A value as written in YAML / --set (true, [1, 2])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; kwargs override the variant's defaults.

    A keyword the model does not take, or a value other than the one the variant fixes, is a
    ModelError. The built model carries `hparams`: every keyword its constructor received,
    defaults filled in (what the model really is, whatever a config says).
    """
    entry = model_entry(name)
    unknown = sorted(set(kwargs) - set(entry.params))
    if unknown:
        raise ModelError(f"model {name!r} takes no {', '.join(unknown)} (it takes {', '.join(entry.params)})")
    for key, value in kwargs.items():
        if key in entry.fixed and not _same(value, entry.fixed[key]):
            raise ModelError(f"model {name!r} fixes {key}={_yaml(entry.fixed[key])}; got {key}={_yaml(value)}")
    hparams = {**entry.defaults, **kwargs, **entry.fixed}
    model = entry.factory(**hparams)
    bound = inspect.signature(entry.arch or entry.factory).bind(**hparams)
    bound.apply_defaults()
    # nn.Module.__setattr__ is typed for tensors and modules only; any value is a plain attribute.
    model.hparams = dict(bound.arguments)  # type: ignore[assignment]
    return model


def _takers(kwarg: str, like: ModelEntry) -> list[str]:
    """Up to 3 models a caller may set `kwarg` on, the same architecture as `like` first."""
    takers = [e for e in _REGISTRY.values() if e.takes(kwarg)]
    takers.sort(key=lambda e: (e.arch is not like.arch, e.name))
    return [e.name for e in takers[:3]]


def model_kwargs(model_config: ModelConfig, given: Collection[str] = ()) -> dict[str, Any]:
    """The model keywords a `ModelConfig` sets on its model; ConfigError when a `model.*` value
    would not reach it.

    A field set to something other than its ModelConfig default must be taken by the model: a
    field the model does not take (`time_dilations` on `stream_tinyconv`) or a value other than
    the one the variant fixes (`width_multiplier: 1.0` on `tinyconv_v2_075`) is refused, naming
    the field, the model and models that do take it. A field left at its default is forwarded
    when the model takes it and otherwise left to the variant. A field named in `given` (written
    by the user: `config.check_model_fields` knows which) must match a value the variant fixes
    even when it equals the default (`width_multiplier: 0.5` on `tinyconv_v2_075` is refused, not
    silently built at 0.75); written defaults on fields a model neither takes nor fixes stay
    accepted, since a saved config writes every field.
    """
    from tinyconv.config import ConfigError, ModelConfig

    try:
        entry = model_entry(model_config.name)
    except ModelError as exc:
        raise ConfigError(f"model.name: {exc}") from None
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    out: dict[str, Any] = {}
    for field, kwarg in CONFIG_KWARGS.items():
        value = getattr(model_config, field)
        if entry.takes(kwarg):
            out[kwarg] = value
            continue
        if kwarg in entry.fixed and _same(value, entry.fixed[kwarg]):
            continue
        if _same(value, defaults[field]) and (field not in given or kwarg not in entry.fixed
                                               or not _config_holds(field, entry.fixed[kwarg])):
            continue
        takers = _takers(kwarg, entry)
        hint = (f"use a model that takes it ({', '.join(map(repr, takers))})" if takers
                else "no registered model takes it")
        if kwarg in entry.fixed:
            fixed = _yaml(entry.fixed[kwarg])
            raise ConfigError(f"model.{field}={_yaml(value)} contradicts model {entry.name!r}, which fixes "
                              f"{kwarg}={fixed}: set model.{field} to {fixed}, leave it out, or {hint}")
        raise ConfigError(f"model.{field}={_yaml(value)} has no effect on model {entry.name!r}, which does not "
                          f"take {kwarg}: leave model.{field} at its default ({_yaml(defaults[field])}) or {hint}")
    return out


def resolved_model_config(model_config: ModelConfig) -> ModelConfig:
    """`model_config` with the values its variant fixes written into their fields, so a saved config
    (checkpoint, run folder) says what was built: `tinyconv_v2_075` records width_multiplier 0.75,
    not the field's default. ConfigError as `model_kwargs` for values that would not reach the model."""
    model_kwargs(model_config)
    entry = model_entry(model_config.name)
    out = model_config
    for field, kwarg in CONFIG_KWARGS.items():
        if kwarg in entry.fixed and _config_holds(field, entry.fixed[kwarg]):
            out = dataclasses.replace(out, **{field: entry.fixed[kwarg]})
    return out


def _config_holds(field: str, value: Any) -> bool:
    """Whether ModelConfig can hold `value` in `field` (a 2-block test variant's dilations it cannot)."""
    from tinyconv.config import ConfigError, ModelConfig

    try:
        dataclasses.replace(ModelConfig(), **{field: value})
    except ConfigError:
        return False
    return True


def check_model_config(model_config: ModelConfig, given: Collection[str] = ()) -> None:
    """ConfigError unless every `model.*` value reaches the named model (see `model_kwargs`)."""
    model_kwargs(model_config, given)


def build_model(model_config: ModelConfig, num_classes: int, frontend: FrontendConfig | None = None) -> nn.Module:
    """The student a config names, with every `model.*` value the model takes (no per-name cases).

    ConfigError when a value would not reach the model, or the model refuses the values.
    """
    from tinyconv.config import ConfigError, FrontendConfig

    fe = frontend or FrontendConfig()
    kwargs = model_kwargs(model_config)
    kwargs.update(num_classes=num_classes, num_frames=fe.num_frames, num_channels=fe.num_channels)
    try:
        return create_model(model_config.name, **kwargs)
    except ValueError as exc:  # the model's own checks (e.g. strided_blocks beyond its blocks)
        raise ConfigError(f"model {model_config.name!r} cannot be built from this config: {exc}") from exc
