"""A tiny TinyConv-shaped INT8 .tflite written directly as a flatbuffer (no converter, no torch).

Input int8 [1, 98, 40] (one second of frontend features) -> RESHAPE -> CONV_2D 10x8 stride 2
(per-channel int8 weights, ReLU) -> FULLY_CONNECTED -> int8 logits [1, 2]. Random weights with a
fixed seed. Used by tests, the benchmark and the CI gate so they run without an export; variants
cover the bad-input paths (float I/O, an op TFLite Micro lacks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NUM_FRAMES, NUM_CHANNELS = 98, 40
INPUT_SCALE, INPUT_ZERO_POINT = 0.1, -128  # features in [0, ~26] -> int8, as exports do
OUTPUT_SCALE, OUTPUT_ZERO_POINT = 0.05, 0


def build_tiny_model(*, seed: int = 0, channels: int = 8, num_classes: int = 2, float_io: bool = False,
                     missing_op: bool = False) -> bytes:
    """Serialized .tflite bytes of the tiny model (see module doc)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    rng = np.random.default_rng(seed)
    kh, kw, stride = 10, 8, 2
    oh, ow = (NUM_FRAMES - kh) // stride + 1, (NUM_CHANNELS - kw) // stride + 1
    fc_in = oh * ow * channels

    buffers: list[s.BufferT] = [s.BufferT()]  # buffer 0 is the empty sentinel

    def buffer(data: np.ndarray | None) -> int:
        b = s.BufferT()
        if data is not None:
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8).tolist()
        buffers.append(b)
        return len(buffers) - 1

    tensors: list[s.TensorT] = []

    def tensor(name: str, shape: list[int], ttype: int, data: np.ndarray | None = None,
               scale: list[float] | None = None, zp: list[int] | None = None, qdim: int = 0) -> int:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), shape, ttype, buffer(data)
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint, q.quantizedDimension = scale, zp or [0] * len(scale), qdim
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    i8, i32, f32 = s.TensorType.INT8, s.TensorType.INT32, s.TensorType.FLOAT32
    in_scale, in_zp = [INPUT_SCALE], [INPUT_ZERO_POINT]
    w_scale = (rng.uniform(0.002, 0.01, channels)).astype(np.float32)
    conv_out_scale = 0.05
    fc_w_scale = 0.00005  # keeps the random logits inside the int8 range

    ops: list[tuple[int, list[int], list[int], int, object]] = []  # (builtin, ins, outs, opt type, opts)
    if float_io:
        x_float = tensor("features_float", [1, NUM_FRAMES, NUM_CHANNELS], f32)
        x = tensor("features", [1, NUM_FRAMES, NUM_CHANNELS], i8, scale=in_scale, zp=in_zp)
        ops.append((s.BuiltinOperator.QUANTIZE, [x_float], [x], 0, None))
        graph_in = x_float
    else:
        x = tensor("features", [1, NUM_FRAMES, NUM_CHANNELS], i8, scale=in_scale, zp=in_zp)
        graph_in = x
    shape = tensor("shape", [4], i32, np.array([1, NUM_FRAMES, NUM_CHANNELS, 1], dtype=np.int32))
    x4 = tensor("features_4d", [1, NUM_FRAMES, NUM_CHANNELS, 1], i8, scale=in_scale, zp=in_zp)
    ropt = s.ReshapeOptionsT()
    ropt.newShape = [1, NUM_FRAMES, NUM_CHANNELS, 1]
    ops.append((s.BuiltinOperator.RESHAPE, [x, shape], [x4], s.BuiltinOptions.ReshapeOptions, ropt))

    w = rng.integers(-127, 128, size=(channels, kh, kw, 1)).astype(np.int8)
    # int32 bias at scale in_scale * w_scale (TFLite's int8 conv convention)
    bias = rng.integers(-2000, 2000, size=channels).astype(np.int32)
    wt = tensor("conv/weights", [channels, kh, kw, 1], i8, w, scale=w_scale.tolist(), zp=[0] * channels, qdim=0)
    bt = tensor("conv/bias", [channels], i32, bias, scale=(w_scale * INPUT_SCALE).tolist(), zp=[0] * channels)
    conv_out = tensor("conv/relu", [1, oh, ow, channels], i8, scale=[conv_out_scale], zp=[-128])
    copt = s.Conv2DOptionsT()
    copt.padding, copt.strideH, copt.strideW = s.Padding.VALID, stride, stride
    copt.fusedActivationFunction = s.ActivationFunctionType.RELU
    copt.dilationHFactor = copt.dilationWFactor = 1
    ops.append((s.BuiltinOperator.CONV_2D, [x4, wt, bt], [conv_out], s.BuiltinOptions.Conv2DOptions, copt))

    last = conv_out
    if missing_op:  # a custom op no runtime registers
        odd = tensor("custom/out", [1, oh, ow, channels], i8, scale=[conv_out_scale], zp=[-128])
        ops.append((-1, [last], [odd], 0, None))
        last = odd

    fw = rng.integers(-127, 128, size=(num_classes, fc_in)).astype(np.int8)
    fb = rng.integers(-500, 500, size=num_classes).astype(np.int32)
    fwt = tensor("fc/weights", [num_classes, fc_in], i8, fw, scale=[fc_w_scale], zp=[0])
    fbt = tensor("fc/bias", [num_classes], i32, fb, scale=[fc_w_scale * conv_out_scale], zp=[0])
    logits = tensor("logits", [1, num_classes], i8, scale=[OUTPUT_SCALE], zp=[OUTPUT_ZERO_POINT])
    fopt = s.FullyConnectedOptionsT()
    ops.append((s.BuiltinOperator.FULLY_CONNECTED, [last, fwt, fbt], [logits],
                s.BuiltinOptions.FullyConnectedOptions, fopt))
    graph_out = logits
    if float_io:
        out_f = tensor("logits_float", [1, num_classes], f32)
        ops.append((s.BuiltinOperator.DEQUANTIZE, [logits], [out_f], 0, None))
        graph_out = out_f

    codes: list[int] = []
    operators = []
    for builtin, ins, outs, opt_type, opts in ops:
        key = builtin
        if key not in codes:
            codes.append(key)
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes.index(key), ins, outs
        op.builtinOptionsType, op.builtinOptions = opt_type, opts
        operators.append(op)
    op_codes = []
    for code in codes:
        oc = s.OperatorCodeT()
        if code == -1:
            oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
            oc.customCode = b"TinyconvMissingOp"
        else:
            oc.builtinCode, oc.deprecatedBuiltinCode = code, min(code, 127)
        oc.version = 1
        op_codes.append(oc)

    g = s.SubGraphT()
    g.tensors, g.operators, g.inputs, g.outputs = tensors, operators, [graph_in], [graph_out]
    g.name = b"main"
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, op_codes, [g], buffers
    m.description = b"tinyconv synthetic test model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_tiny_model(path: str | Path, **kwargs: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_tiny_model(**kwargs))  # type: ignore[arg-type]
    return path
