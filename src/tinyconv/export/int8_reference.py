"""An integer reference for int8 .tflite files: TFLite Micro's kernel arithmetic, op by op, in Python.

`TfliteIntegerReference(data)` runs subgraph 0 of a full-integer .tflite from the file's own
int8 weights, int32 biases, scales and zero points, with the arithmetic of TFLite Micro's
reference kernels, and keeps resource variables between invokes (CALL_ONCE initializes them
on the first invoke, as in TFLM). It exists to check the stateful ESPHome streaming model
(`export/esphome.py`) step by step over a stream, bit for bit: TFLM's Python interpreter
exposes no intermediate tensors, so this is the only way to say that what TFLM computes is
exactly the graph in the file (state read before it is overwritten, the CALL_ONCE init, the
ring-buffer slices, the requantizations) rather than "close to the float model".

Ops (the streaming graph's, all in ESPHome's resolver), with the TFLM source they follow:
- CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED (int8, per-channel or per-tensor weights):
  int32 accumulation + `MultiplyByQuantizedMultiplier` with the multiplier from
  input_scale * filter_scale / output_scale in double (kernel_util.cc,
  fully_connected_common.cc); reuses `int8_conv_or_linear` and the fixed-point helpers of
  `tinyconv.export.int8_kernels` (the window model's emulator, bit-exact with TFLM there).
- LOGISTIC int8: reference_integer_ops::Logistic: input rescaled to Q4.27, gemmlowp's
  fixed-point logistic (ported below), RoundingDivideByPOT(23), zero point -128.
- QUANTIZE int8 -> int8/uint8: reference_ops::Requantize.
- CONCATENATION int8: a plain copy. TFLM's int8 kernel does not rescale and refuses inputs
  whose scale or zero point differ from the output's (concatenation.cc Prepare), so the
  reference refuses them too (LiteRT would rescale them in float).
- STRIDED_SLICE, SPLIT_V, RESHAPE, VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, CALL_ONCE: copies.
Any other op raises `IntegerReferenceError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyconv.export.errors import ExportError

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


class IntegerReferenceError(ExportError):
    """The integer reference cannot run this .tflite (an op or a tensor type it does not emulate)."""


# ---- gemmlowp fixed point (third_party gemmlowp/fixedpoint/fixedpoint.h), scalar int32 ---------


def _wrap32(x: int) -> int:
    """int32 two's-complement wrap (the C++ code adds raw int32 values)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul (int32)."""
    if a == b == _INT32_MIN:
        return _INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) // (1 << 31)  # C++ integer division truncates toward zero
    return q if ab + nudge >= 0 else -q


def _rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT: round to nearest, ties away from zero."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def _srmbpot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent>."""
    if exponent == 0:
        return x
    if exponent < 0:
        return _rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return _INT32_MAX
    if x < -threshold:
        return _INT32_MIN
    return x << exponent


def _rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    sign = 1 if s >= 0 else -1
    q = abs(s + sign) // 2
    return q if s + sign >= 0 else -q


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out."""
    constant_term, one_third = 1895147668, 715827883  # exp(-1/8), 1/3
    x = _wrap32(a + (1 << 28))  # a + 1/8
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _srmbpot(x4, -2)
    poly = _srmbpot(_wrap32(_srdhm(_wrap32(x4_over_4 + x3), one_third) + x2), -1)
    return _wrap32(constant_term + _srdhm(constant_term, _wrap32(x + poly)))


# (exponent, Q0.31 of exp(-2^exponent)): the barrel shifter of gemmlowp's exp_on_negative_values.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))


def _exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a <= 0 given with `integer_bits` integer bits; Q0.31 result."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = _wrap32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _srmbpot(a_mod_quarter_minus_one_quarter, integer_bits))  # Rescale<0>
    remainder = _wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent and remainder & (1 << (fractional_bits + exponent)):
            result = _srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    return _INT32_MAX if a == 0 else result


def _one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """1 / (1 + a) for a in (0, 1), Q0.31 in and out (three Newton-Raphson steps in Q2.29)."""
    half_denominator = _rounding_half_sum(a, _INT32_MAX)
    x = _wrap32(1515870810 + _srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus = _wrap32((1 << 29) - _srdhm(half_denominator, x))
        x = _wrap32(x + _srmbpot(_srdhm(x, one_minus), 2))  # Rescale<2> from Q4.27
    return _srmbpot(x, 1)  # ExactMulByPot<-1> (Q1.30), then Rescale<0>


def fixed_point_logistic(a: int, integer_bits: int = 4) -> int:
    """gemmlowp::logistic of a raw Q(integer_bits) int32 value; raw Q0.31 result."""
    if a == 0:
        return 1 << 30
    positive = _one_over_one_plus_x_for_x_in_0_1(_exp_on_negative_values(-abs(a), integer_bits))
    return positive if a > 0 else _wrap32(_INT32_MAX - positive)


# ---- tensors and ops -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name ("int8", "int32", "resource", ...)
    scale: np.ndarray  # float32 scales as stored (empty: none)
    zero_point: np.ndarray
    quantized_dimension: int
    const: np.ndarray | None
    name: str

    @property
    def qparams(self) -> tuple[float, int]:
        if self.scale.size != 1:
            raise IntegerReferenceError(f"tensor {self.name!r} has {self.scale.size} scales; expected one")
        return float(self.scale[0]), int(self.zero_point[0]) if self.zero_point.size else 0


@dataclass(frozen=True)
class QuantizedLayer:
    """One CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED of a .tflite with its tensors."""

    op: str
    input: _Tensor
    weight: _Tensor
    bias: _Tensor | None
    output: _Tensor


_NP_TYPES = {"INT8": "int8", "UINT8": "uint8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
             "FLOAT32": "float32", "BOOL": "bool", "RESOURCE": "resource"}


def _activation_range(code: int, scale: float, zero_point: int, qmin: int, qmax: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized (kernel_util.cc): fused NONE / RELU / RELU_N1_TO_1 / RELU6."""
    def q(v: float) -> int:  # zero_point + TfLiteRound(v / scale), float32 division as in C++
        r = float(np.float32(v) / np.float32(scale))
        return zero_point + int(np.sign(r) * np.floor(abs(r) + 0.5))

    if code == 0:
        return qmin, qmax
    if code == 1:
        return max(qmin, q(0.0)), qmax
    if code == 2:
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    if code == 3:
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    raise IntegerReferenceError(f"fused activation {code} is not emulated (only NONE, RELU, RELU_N1_TO_1, RELU6)")


def _multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier of a double (the int8_kernels.py helper, on a scalar)."""
    import torch

    from tinyconv.export.int8_kernels import quantize_multiplier

    m, s = quantize_multiplier(torch.tensor([real], dtype=torch.float64))
    return int(m[0]), int(s[0])


def _mbqm(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier on an int64 array (int8_kernels.py's double-rounding helper)."""
    import torch

    from tinyconv.export.int8_kernels import multiply_by_quantized_multiplier

    out = multiply_by_quantized_multiplier(
        torch.from_numpy(np.asarray(x, np.int64)), torch.tensor(multiplier, dtype=torch.int64),
        torch.tensor(shift, dtype=torch.int64))
    return out.numpy()


class TfliteIntegerReference:
    """Subgraph 0 of a full-integer .tflite run with TFLite Micro's integer arithmetic, state kept.

    `invoke(x)` takes the input tensor's values (int8) and returns output 0; resource variables
    persist between invokes, as in one TFLM interpreter; `reset()` starts over (CALL_ONCE runs
    again on the next invoke).
    """

    def __init__(self, data: bytes) -> None:
        from ai_edge_litert import schema_py_generated as schema

        try:
            self._model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        except Exception as exc:  # the flatbuffer reader raises assorted errors on garbage
            raise IntegerReferenceError(f"not a valid .tflite flatbuffer: {exc}") from exc
        if not self._model.subgraphs:
            raise IntegerReferenceError("the .tflite has no subgraph")
        self._data = data
        self._op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self._tensors = [[self._tensor(t, type_names) for t in (sg.tensors or [])] for sg in self._model.subgraphs]
        # Per-op constants (multipliers, torch weights) computed once: TFLM does this in Prepare.
        self._prepared: dict[tuple[int, int], Any] = {}
        self.reset()

    def _tensor(self, t: Any, type_names: dict[int, str]) -> _Tensor:
        dtype = _NP_TYPES.get(type_names.get(t.type, ""), type_names.get(t.type, str(t.type)).lower())
        q = t.quantization
        scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
        zp = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
        shape = tuple(int(s) for s in (t.shape if t.shape is not None else []))
        const = None
        buf = self._model.buffers[t.buffer] if t.buffer < len(self._model.buffers) else None
        raw: bytes | None = None
        if buf is not None and buf.data is not None and len(buf.data):
            raw = bytes(np.asarray(buf.data, np.uint8))
        elif buf is not None and getattr(buf, "offset", 0) > 1:  # large models keep buffers after the flatbuffer
            raw = self._data[buf.offset : buf.offset + buf.size]
        if raw is not None and dtype != "resource":
            const = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")
        return _Tensor(shape, dtype, scale, zp, int(q.quantizedDimension) if q is not None else 0, const, name)

    def quantized_layers(self) -> list[QuantizedLayer]:
        """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED of subgraph 0, in execution order."""
        sg, tensors = self._model.subgraphs[0], self._tensors[0]
        layers = []
        for op in sg.operators or []:
            code = self._model.operatorCodes[op.opcodeIndex]
            name = self._op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                continue
            ins = [int(i) for i in op.inputs]
            bias = tensors[ins[2]] if len(ins) > 2 and ins[2] >= 0 else None
            layers.append(QuantizedLayer(name, tensors[ins[0]], tensors[ins[1]], bias, tensors[int(op.outputs[0])]))
        return layers

    def reset(self) -> None:
        self._variables: dict[tuple[str, str], np.ndarray] = {}
        self._called_once: set[int] = set()

    # ---- running ------------------------------------------------------------------------------

    def invoke(self, x: np.ndarray) -> np.ndarray:
        sg = self._model.subgraphs[0]
        inputs = list(sg.inputs if sg.inputs is not None else [])
        if len(inputs) != 1:
            raise IntegerReferenceError(f"the reference feeds one input; the model has {len(inputs)}")
        spec = self._tensors[0][inputs[0]]
        x = np.asarray(x)
        if x.dtype != np.dtype(spec.dtype) or tuple(x.shape) != spec.shape:
            raise IntegerReferenceError(f"input must be {spec.dtype} {list(spec.shape)}, got {x.dtype} {list(x.shape)}")
        values = self._run(0, {int(inputs[0]): x})
        return values[int(sg.outputs[0])]

    def _run(self, index: int, values: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        sg = self._model.subgraphs[index]
        tensors = self._tensors[index]

        def value(i: int) -> np.ndarray:
            if i in values:
                return values[i]
            if tensors[i].const is not None:
                return tensors[i].const  # type: ignore[return-value]
            raise IntegerReferenceError(f"tensor {tensors[i].name!r} is read before it is written")

        for n, op in enumerate(sg.operators or []):
            code = self._model.operatorCodes[op.opcodeIndex]
            name = self._op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"OPCODE_{code.builtinCode}")
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            opts = op.builtinOptions
            where = f"op #{n} {name} (subgraph {index})"
            if name == "CALL_ONCE":
                init = int(opts.initSubgraphIndex)
                if init not in self._called_once:
                    self._called_once.add(init)
                    self._run(init, {})
            elif name == "VAR_HANDLE":
                values[outs[0]] = np.array((_text(opts.container), _text(opts.sharedName)), dtype=object)
            elif name == "READ_VARIABLE":
                key = tuple(value(ins[0]))
                if key not in self._variables:
                    raise IntegerReferenceError(f"{where}: variable {key[1]!r} is read before it is assigned")
                values[outs[0]] = self._variables[key].copy()  # type: ignore[index]
            elif name == "ASSIGN_VARIABLE":
                key, new = tuple(value(ins[0])), value(ins[1])
                old = self._variables.get(key)  # type: ignore[arg-type]
                if old is not None and (old.shape != new.shape or old.dtype != new.dtype):
                    raise IntegerReferenceError(f"{where}: variable {key[1]!r} changes from {old.dtype} "
                                                f"{list(old.shape)} to {new.dtype} {list(new.shape)}")
                self._variables[key] = np.array(new, copy=True)  # type: ignore[index]
            elif name == "RESHAPE":
                values[outs[0]] = value(ins[0]).reshape(tensors[outs[0]].shape)
            elif name == "CONCATENATION":
                values[outs[0]] = self._concatenation(where, [tensors[i] for i in ins], tensors[outs[0]],
                                                      [value(i) for i in ins], opts)
            elif name == "STRIDED_SLICE":
                values[outs[0]] = _strided_slice(where, value(ins[0]), value(ins[1]), value(ins[2]),
                                                 value(ins[3]), opts, tensors[outs[0]].shape)
            elif name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                bias = value(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
                key = (index, n)
                if key not in self._prepared:
                    self._prepared[key] = self._prepare_conv(where, name, tensors[ins[0]], tensors[ins[1]], bias,
                                                             tensors[outs[0]], opts)
                values[outs[0]] = self._conv(name, value(ins[0]), tensors[outs[0]], opts, self._prepared[key])
            elif name == "SPLIT_V":  # microWakeWord's MixConv blocks split channels: a copy
                x, sizes = value(ins[0]), [int(v) for v in value(ins[1])]
                axis = int(np.asarray(value(ins[2])).reshape(-1)[0]) % x.ndim
                if -1 in sizes:
                    sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
                for i, part in zip(outs, np.split(x, np.cumsum(sizes)[:-1], axis=axis), strict=True):
                    values[i] = part.copy()
            elif name == "LOGISTIC":
                values[outs[0]] = _logistic(where, value(ins[0]), tensors[ins[0]], tensors[outs[0]])
            elif name == "QUANTIZE":
                values[outs[0]] = _requantize(where, value(ins[0]), tensors[ins[0]], tensors[outs[0]])
            else:
                raise IntegerReferenceError(f"{where}: the integer reference has no emulation of {name}")
        return values

    def _concatenation(self, where: str, ins: list[_Tensor], out: _Tensor, xs: list[np.ndarray],
                       opts: Any) -> np.ndarray:
        if int(getattr(opts, "fusedActivationFunction", 0)) != 0:
            raise IntegerReferenceError(
                f"{where}: a fused activation on CONCATENATION is not supported (TFLM refuses it)")
        if out.dtype in ("int8", "uint8"):
            for t in ins:
                if t.qparams != out.qparams:
                    # TFLM's int8 CONCATENATION copies bytes and checks this in Prepare.
                    raise IntegerReferenceError(
                        f"{where}: input {t.name!r} has scale/zero point {t.qparams}, the output {out.qparams}; "
                        "TFLite Micro's int8 CONCATENATION does not rescale and refuses this model")
        return np.concatenate(xs, axis=int(opts.axis) % len(out.shape))

    def _prepare_conv(self, where: str, name: str, t_in: _Tensor, t_w: _Tensor, bias: np.ndarray | None,
                      t_out: _Tensor, opts: Any) -> tuple[Any, ...]:
        import torch

        if t_in.dtype != "int8" or t_w.dtype != "int8" or t_out.dtype != "int8" or t_w.const is None:
            raise IntegerReferenceError(f"{where}: only int8 input, constant int8 weights and int8 output are "
                                        f"emulated, got {t_in.dtype}, {t_w.dtype}, {t_out.dtype}")
        if bias is not None and bias.dtype != np.int32:
            raise IntegerReferenceError(f"{where}: bias must be int32, got {bias.dtype}")
        s_in, z_in = t_in.qparams
        s_out, z_out = t_out.qparams
        if np.any(t_w.zero_point != 0):
            raise IntegerReferenceError(f"{where}: weights must be symmetric (zero point 0) as TFLM requires")
        w = t_w.const.astype(np.float64)
        channels = t_out.shape[-1]
        w_scales = t_w.scale.astype(np.float64)
        w_scales = np.broadcast_to(w_scales, (channels,)) if w_scales.size == 1 else w_scales
        # Multiplier per output channel: input_scale * filter_scale / output_scale in double, from
        # the float32 values the file stores (fully_connected_common.cc, kernel_util.cc).
        mults = [_multiplier(float(np.float32(s_in)) * float(s) / float(np.float32(s_out))) for s in w_scales]
        multiplier = torch.tensor([m for m, _ in mults], dtype=torch.int64)
        shift = torch.tensor([s for _, s in mults], dtype=torch.int64)
        act_min, act_max = _activation_range(int(getattr(opts, "fusedActivationFunction", 0)), s_out, z_out, -128, 127)
        b = None if bias is None else torch.from_numpy(bias.astype(np.int64))
        if name == "FULLY_CONNECTED":
            weight = w
        elif name == "CONV_2D":
            weight = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        else:
            cin = t_in.shape[-1]
            if channels != cin * int(opts.depthMultiplier):
                raise IntegerReferenceError(f"{where}: {channels} output channels, {cin} inputs x multiplier "
                                            f"{opts.depthMultiplier}")
            weight = w[0].transpose(2, 0, 1)[:, None]  # [1, kh, kw, C] -> [C, 1, kh, kw]
        return (z_in, torch.from_numpy(np.ascontiguousarray(weight)), b, multiplier, shift, z_out, act_min, act_max)

    def _conv(self, name: str, x: np.ndarray, t_out: _Tensor, opts: Any, prepared: tuple[Any, ...]) -> np.ndarray:
        import torch

        from tinyconv.export.int8_kernels import int8_conv_or_linear

        z_in, weight, b, multiplier, shift, z_out, act_min, act_max = prepared
        if name == "FULLY_CONNECTED":
            q = torch.from_numpy(x.astype(np.int64)).reshape(-1, weight.shape[1])
            out = int8_conv_or_linear(q, z_in, weight, b, multiplier, shift, z_out, act_min, act_max, None)
            return out.numpy().reshape(t_out.shape)
        stride = (int(opts.strideH), int(opts.strideW))
        dilation = (int(opts.dilationHFactor), int(opts.dilationWFactor))
        groups = 1 if name == "CONV_2D" else x.shape[-1]
        q = torch.from_numpy(x.astype(np.int64)).permute(0, 3, 1, 2)  # NHWC -> NCHW
        if int(opts.padding) == 0:  # SAME: TFLite pads the extra row/column after (ComputePaddingHeightWidth)
            pads = []
            for dim, k, s, d in zip(q.shape[2:], weight.shape[2:], stride, dilation, strict=True):
                eff = (k - 1) * d + 1
                total = max((-(-dim // s) - 1) * s + eff - dim, 0)
                pads.append((total // 2, total - total // 2))
            # Padding holds the input zero point, i.e. 0 after subtracting it: pad (q - z_in) with 0.
            q = torch.nn.functional.pad(q - z_in, (pads[1][0], pads[1][1], pads[0][0], pads[0][1])) + z_in
        out = int8_conv_or_linear(q, z_in, weight, b, multiplier, shift, z_out, act_min, act_max,
                                   (list(stride), [0, 0], list(dilation), groups))
        return out.permute(0, 2, 3, 1).numpy().reshape(t_out.shape)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _strided_slice(where: str, x: np.ndarray, begin: np.ndarray, end: np.ndarray, strides: np.ndarray, opts: Any,
                   out_shape: tuple[int, ...]) -> np.ndarray:
    if int(opts.ellipsisMask) or int(opts.newAxisMask):
        raise IntegerReferenceError(f"{where}: ellipsis and new-axis masks are not emulated")
    offset = bool(getattr(opts, "offset", False))
    index: list[Any] = []
    for axis in range(x.ndim):
        b, e, s = int(begin[axis]), int(end[axis]), int(strides[axis])
        if (int(opts.shrinkAxisMask) >> axis) & 1:
            index.append(b)
            continue
        start = None if (int(opts.beginMask) >> axis) & 1 else b
        stop = None if (int(opts.endMask) >> axis) & 1 else (b + e if offset else e)
        index.append(slice(start, stop, s))
    out = x[tuple(index)]
    if out.size != int(np.prod(out_shape)):
        raise IntegerReferenceError(f"{where}: slice gives {list(out.shape)}, the file declares {list(out_shape)}")
    return np.ascontiguousarray(out).reshape(out_shape)


def _logistic(where: str, x: np.ndarray, t_in: _Tensor, t_out: _Tensor) -> np.ndarray:
    """reference_integer_ops::Logistic with TFLM's Prepare (logistic_common.cc)."""
    if t_in.dtype != "int8" or t_out.dtype != "int8":
        raise IntegerReferenceError(
            f"{where}: only int8 -> int8 LOGISTIC is emulated, got {t_in.dtype} -> {t_out.dtype}")
    s_in, z_in = t_in.qparams
    if t_out.qparams[1] != -128:
        raise IntegerReferenceError(f"{where}: LOGISTIC output zero point must be -128 (TFLM), got {t_out.qparams[1]}")
    input_integer_bits = 4
    real = float(np.float32(s_in)) * float(1 << (31 - input_integer_bits))
    mantissa, left_shift = np.frexp(real)
    multiplier = int(np.floor(mantissa * (1 << 31) + 0.5))  # TfLiteRound of a positive value
    radius = int(np.floor(((1 << input_integer_bits) - 1) * float(1 << (31 - input_integer_bits))
                          / float(1 << int(left_shift))))
    flat = x.astype(np.int64).reshape(-1) - z_in
    out = np.empty(flat.shape, np.int8)
    scaled = _mbqm(flat, multiplier, int(left_shift))
    for i, v in enumerate(flat):
        if v <= -radius:
            out[i] = -128
        elif v >= radius:
            out[i] = 127
        else:
            q0 = fixed_point_logistic(int(scaled[i]), input_integer_bits)
            out[i] = min(max(_rdbpot(q0, 31 - 8) - 128, -128), 127)
    return out.reshape(t_out.shape)


def _requantize(where: str, x: np.ndarray, t_in: _Tensor, t_out: _Tensor) -> np.ndarray:
    """QUANTIZE between integer types: reference_ops::Requantize (quantize_common.cc)."""
    limits = {"int8": (-128, 127), "uint8": (0, 255)}
    if t_in.dtype not in limits or t_out.dtype not in limits:
        raise IntegerReferenceError(f"{where}: only int8/uint8 requantization is emulated, got "
                                    f"{t_in.dtype} -> {t_out.dtype}")
    s_in, z_in = t_in.qparams
    s_out, z_out = t_out.qparams
    multiplier, shift = _multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))
    lo, hi = limits[t_out.dtype]
    out = _mbqm(x.astype(np.int64) - z_in, multiplier, shift) + z_out
    return np.clip(out, lo, hi).astype(t_out.dtype).reshape(t_out.shape)


def run_reference_stream(data: bytes, q_frames: np.ndarray, frames_per_invoke: int) -> np.ndarray:
    """Output 0 of consecutive [1, frames_per_invoke, F] blocks of `q_frames` (one reference, state kept)."""
    ref = TfliteIntegerReference(data)
    n = q_frames.shape[0] // frames_per_invoke
    outs = [ref.invoke(np.ascontiguousarray(q_frames[None, i * frames_per_invoke : (i + 1) * frames_per_invoke]))
            .reshape(-1)[0] for i in range(n)]
    return np.asarray(outs)
