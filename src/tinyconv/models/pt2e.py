"""PT2E quantization of TinyConv: QAT (prepare_qat_pt2e) and PTQ, TFLite Micro integer scheme.

The scheme is TFLite Micro's: int8 weights per output channel, symmetric, zero point 0, range
[-127, 127]; int8 activations per tensor (asymmetric, [-128, 127]); int32 bias with scale
input_scale * weight_scale (the converter derives it). The quantizer is litert-torch's
`PT2EQuantizer`, so the QDQ graph is exactly what `litert_torch.convert` lowers to int8 TFLite
kernels and the learned QAT ranges reach the .tflite unchanged (no re-calibration).

Pins (DESIGN.md section 4): torch==2.13.0, torchao==0.18.0, litert-torch==0.10.0. The
combination needs the pattern-wrapping workaround in `_install_litert_pattern_workaround`;
tests/trainer/test_qat.py fails loudly if an upgrade breaks or obsoletes it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn

from tinyconv.models.fusion import QuantizationError, drop_dropout, fold_tiny_conv, fuse_tiny_conv

PINNED_VERSIONS = {"torch": "2.13.0", "torchao": "0.18.0", "litert-torch": "0.10.0"}

# torch.export traces with a dynamic batch so the same graph trains on batches and converts
# with batch 1 (litert-torch needs the dynamic dim; an example batch of 1 would specialize it).
_EXAMPLE_BATCH = 2
_MAX_BATCH = 1 << 16


# --------------------------------------------------------------------------------------------
# litert-torch quantizer and the PT2E workaround
# --------------------------------------------------------------------------------------------


class _PatternModule(nn.Module):
    """Wraps a pattern function so torch.export accepts it (see the workaround below)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


_WORKAROUND_MARK = "_tinyconv_wraps_patterns"


def _install_litert_pattern_workaround() -> None:
    """litert-torch 0.10.0 + torchao 0.18.0: wrap conv-bn pattern functions in an nn.Module.

    litert-torch's conv+bn QAT annotator passes a plain function to torchao's
    `_get_aten_graph_module_for_pattern`, which now calls `torch.export.export` and fails with
    "Expected `mod` to be an instance of `torch.nn.Module`, got function". Wrapping the
    function is what torchao itself does for its own patterns. Idempotent.
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils

    original = utils._get_aten_graph_module_for_pattern
    if getattr(original, _WORKAROUND_MARK, False):
        return

    @functools.wraps(original)
    def wrapped(pattern: Any, example_inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(pattern, nn.Module):
            pattern = _PatternModule(pattern)
        return original(pattern, example_inputs, *args, **kwargs)

    setattr(wrapped, _WORKAROUND_MARK, True)
    utils._get_aten_graph_module_for_pattern = wrapped


_CONV_KIND_MARK = "_tinyconv_skips_absent_conv_kinds"


def _install_conv_kind_filter() -> None:
    """Run torchao's conv+BN QAT fuse (prepare) and fold (convert) passes only for conv kinds the
    graph holds. Why: each pass runs once per kind (conv1d, conv2d, conv_transpose1d/2d) and traces
    every pattern variant with torch.export, ~130 traces per convert; TinyConv holds only conv2d, so
    three of four passes cannot match and cost ~75 % of a QAT export (15-20 s on 2 cores). A skipped
    pass would have replaced nothing; its dequantize duplicate/merge bookkeeping is done by the pass
    that runs. tests/trainer/test_qat.py checks the filtered convert equals torchao's unfiltered one.
    Idempotent.
    """
    import torch.nn.functional as F
    from torchao.quantization.pt2e import qat_utils

    ops = {F.conv1d: torch.ops.aten.conv1d, F.conv2d: torch.ops.aten.conv2d,
           F.conv_transpose1d: torch.ops.aten.conv_transpose1d, F.conv_transpose2d: torch.ops.aten.conv_transpose2d}

    def holds(m: torch.fx.GraphModule, conv_fn: Any) -> bool:
        packet = ops.get(conv_fn)
        return packet is None or any(getattr(n.target, "overloadpacket", None) is packet for n in m.graph.nodes)

    for name in ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper"):
        original = getattr(qat_utils, name)
        if getattr(original, _CONV_KIND_MARK, False):
            continue

        def filtered(m: torch.fx.GraphModule, conv_fn: Any, *args: Any, _original: Any = original,
                     **kwargs: Any) -> torch.fx.GraphModule:
            return _original(m, conv_fn, *args, **kwargs) if holds(m, conv_fn) else m

        functools.update_wrapper(filtered, original)
        setattr(filtered, _CONV_KIND_MARK, True)
        setattr(qat_utils, name, filtered)


def make_quantizer(*, is_qat: bool) -> Any:
    """litert-torch's PT2E quantizer with the TFLM scheme (per-channel symmetric int8 weights)."""
    from litert_torch.quantize import pt2e_quantizer as pq

    _install_litert_pattern_workaround()
    _install_conv_kind_filter()
    return pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat))


def _export(model: nn.Module, input_shape: tuple[int, int]) -> torch.fx.GraphModule:
    example = torch.zeros(_EXAMPLE_BATCH, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()


# --------------------------------------------------------------------------------------------
# QAT model
# --------------------------------------------------------------------------------------------

_BATCH_NORM_OPS = (torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit.default)


class QATTinyConv(nn.Module):
    """A PT2E-prepared TinyConv with fake quantization, trainable like the float model.

    An exported graph does not switch BN/dropout on `.train()`/`.eval()` by itself; this wrapper
    does (torchao's move_exported_model_to_train/eval), keeps BN statistics frozen across those
    switches once frozen, and stops observers in eval mode (torchao's fake-quant modules would
    otherwise keep updating ranges on validation batches).
    """

    # Registered as buffers in __init__ (declared here: nn.Module's __getattr__ is typed Tensor | Module).
    bn_frozen: torch.Tensor
    observers_frozen: torch.Tensor

    def __init__(self, graph_module: torch.fx.GraphModule, *, num_classes: int, input_shape: tuple[int, int]) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.num_classes = num_classes
        self.input_shape = input_shape
        # Buffers so that the freeze state travels in the checkpoint's state_dict.
        self.register_buffer("bn_frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("observers_frozen", torch.zeros((), dtype=torch.bool))
        self.train(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)

    def train(self, mode: bool = True) -> QATTinyConv:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        gm = self.graph_module
        if mode:
            move_exported_model_to_train(gm)
            if bool(self.bn_frozen):
                self._set_bn_training(False)
        else:
            move_exported_model_to_eval(gm)
        gm.apply(enable_observer if mode and not bool(self.observers_frozen) else disable_observer)
        for module in self.modules():
            module.training = mode
        return self

    def _set_bn_training(self, training: bool) -> int:
        count = 0
        for node in self.graph_module.graph.nodes:
            if node.op == "call_function" and node.target in _BATCH_NORM_OPS:
                args = list(node.args)
                args[5] = training  # aten.batch_norm(input, w, b, mean, var, training, ...)
                node.args = tuple(args)
                count += 1
        self.graph_module.recompile()
        return count

    def freeze_bn(self) -> None:
        """Use running BN statistics from now on (they stop updating)."""
        self.bn_frozen.fill_(True)
        if self.training and self._set_bn_training(False) == 0:
            raise QuantizationError("freeze_bn found no batch-norm op in the prepared QAT graph")

    def freeze_observers(self) -> None:
        """Stop updating quantization ranges; fake quantization continues with the learned ones."""
        from torchao.quantization.pt2e import disable_observer

        self.observers_frozen.fill_(True)
        self.graph_module.apply(disable_observer)

    def to_reference(self) -> torch.fx.GraphModule:
        """The converted QDQ graph (BN folded, learned scales as constants), eval mode, a copy.

        `tinyconv.export.int8_kernels.integer_kernel_reference` computes it as TFLite Micro does.
        """
        return convert_prepared(self.graph_module)


def convert_prepared(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    _install_conv_kind_filter()
    gm = copy.deepcopy(prepared)
    move_exported_model_to_eval(gm)
    # fold_quantize=False keeps weight quantize/dequantize pairs, which litert-torch's STATIC
    # QDQ lowering turns into int8 weights; it also keeps the graph runnable by the ONNX exporter.
    return quantize_biases_int32(convert_pt2e(gm, fold_quantize=False))


def graph_attr(module: nn.Module, target: str) -> torch.Tensor:
    """The tensor a get_attr node names ("a.b.c"), looked up on `module`."""
    return functools.reduce(getattr, target.split("."), module)  # type: ignore[return-value]


def _dq_scale(node: Any, module: torch.fx.GraphModule) -> torch.Tensor | None:
    """The scale of a dequantize node (a float for per-tensor, a get_attr tensor per-channel)."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function" or "dequantize" not in str(node.target):
        return None
    scale = node.args[1]
    if isinstance(scale, torch.fx.Node) and scale.op == "get_attr":
        return graph_attr(module, str(scale.target)).detach().to(torch.float64)
    if isinstance(scale, (float, int)):
        return torch.tensor([float(scale)], dtype=torch.float64)
    return None


def quantize_biases_int32(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Round every conv/linear bias onto the int32 grid TFLite stores it on (in place).

    The converter stores bias as int32 with scale input_scale * weight_scale[c]. Leaving the
    float bias in the PyTorch reference makes it disagree with the int8 kernels by one LSB on
    ~1 % of activations (rounding ties), which compounds through the layers; rounding it here
    makes the reference compute what the device computes (and the converter's rounding a no-op).
    """
    targets = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in targets or len(node.args) < 3:
            continue
        bias_node = node.args[2]
        if not isinstance(bias_node, torch.fx.Node) or bias_node.op != "get_attr":
            continue
        s_in, s_w = _dq_scale(node.args[0], gm), _dq_scale(node.args[1], gm)
        if s_in is None or s_w is None:
            continue
        bias = graph_attr(gm, str(bias_node.target))
        step = (s_in * s_w).reshape(-1)
        with torch.no_grad():
            rounded = torch.round(bias.detach().to(torch.float64) / step).clamp(-(2**31), 2**31 - 1) * step
            bias.copy_(rounded.to(bias.dtype))
    return gm


def prepare_qat(model: nn.Module) -> QATTinyConv:
    """Fuse a float TinyConv and insert fake quantization (PT2E QAT). The input is untouched."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    fused = fuse_tiny_conv(model)
    # QAT fine-tunes without dropout (see drop_dropout): a short fine-tune needs no extra
    # regularization, and a train-mode dropout would also skew the observed ranges by 1/(1-p).
    drop_dropout(fused)
    fused.train()
    gm = _export(fused, fused.input_shape)
    prepared = prepare_qat_pt2e(gm, make_quantizer(is_qat=True))
    return QATTinyConv(prepared, num_classes=fused.num_classes, input_shape=fused.input_shape)


def load_qat_state(float_model: nn.Module, state_dict: dict[str, torch.Tensor]) -> QATTinyConv:
    """Rebuild a QAT model from the float architecture and a `QATTinyConv.state_dict()`."""
    qat = prepare_qat(float_model)
    # Observers have not seen data yet, so per-channel buffers are still empty: run one batch
    # so every observer/fake-quant buffer has its trained shape before loading.
    with torch.no_grad():
        qat(torch.zeros(_EXAMPLE_BATCH, *qat.input_shape))
    try:
        qat.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise QuantizationError(f"QAT state does not match the model architecture: {exc}") from exc
    qat.train(False)
    return qat


def quantize_ptq(float_model: nn.Module, calibration: Iterable[torch.Tensor]) -> torch.fx.GraphModule:
    """Post-training quantization: fold BN, observe activation ranges on `calibration` batches."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    folded = fold_tiny_conv(float_model)
    prepared = prepare_pt2e(_export(folded, folded.input_shape), make_quantizer(is_qat=False))
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
            seen += int(batch.shape[0])
    if seen == 0:
        raise QuantizationError("post-training quantization needs at least one calibration example")
    return quantize_biases_int32(convert_pt2e(prepared, fold_quantize=False))
