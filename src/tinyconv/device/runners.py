"""The three runtimes behind one small interface: ONNX Runtime, LiteRT (XNNPACK / reference), TFLM.

Runners load a model in the current process; call `check_runtimes` (or measure its arena,
arena.py) first (it probes the same files in an isolated worker) so a model that would crash a
native interpreter never reaches a runner. Every runner takes and returns arrays in the model's
own dtype and input shape. `run_tflm` is the exporter's batch form of `TflmRunner`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tinyconv._quiet import native_stderr_captured
from tinyconv.device.errors import ModelError
from tinyconv.device.isolate import run_isolated
from tinyconv.device.tflite_checks import MAX_INPUT_ELEMENTS
from tinyconv.device.tflite_file import TfliteModel

TFLITE_RUNTIMES = ("tflm", "litert", "litert_ref")
ALL_RUNTIMES = (*TFLITE_RUNTIMES, "onnx_int8", "onnx_float")


class Runner(Protocol):
    name: str
    input_shape: tuple[int, ...]
    input_dtype: np.dtype
    input_quant: tuple[float, int]  # scale, zero point (1.0, 0 for float inputs)
    output_quant: tuple[float, int]

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


def _quant(details: dict[str, Any]) -> tuple[float, int]:
    q = details.get("quantization_parameters") or {}
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    if len(scales):
        return float(scales[0]), int(zps[0])
    scale, zp = details.get("quantization", (0.0, 0))
    return (float(scale), int(zp)) if scale else (1.0, 0)


class TflmRunner:
    """TFLite Micro (reference kernels, the code that runs on the MCU)."""

    name = "tflm"

    def __init__(self, data: bytes, arena_size: int) -> None:
        from tflite_micro import runtime

        self._data, self._arena = data, arena_size
        self._interp = runtime.Interpreter.from_bytes(data, arena_size=arena_size)
        inp, out = self._interp.get_input_details(0), self._interp.get_output_details(0)
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_dtype = np.dtype(inp["dtype"])
        self.input_quant, self.output_quant = _quant(inp), _quant(out)

    def run(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_input(np.ascontiguousarray(x, dtype=self.input_dtype).reshape(self.input_shape), 0)
        self._interp.invoke()
        return np.array(self._interp.get_output(0))

    def reset(self) -> None:
        self._interp.reset()  # resource variables (streaming state) back to their initial values


def run_tflm(data: bytes, x_int8: np.ndarray, arena_bytes: int) -> np.ndarray:
    """Run int8 inputs [N, ...] through TFLite Micro one at a time; int8 outputs [N, ...].

    In-process: call only with an arena known to allocate (`arena.measure_host_arena`): a failed
    allocation here would leave the interpreter library in a state that crashes the next one.
    """
    runner = TflmRunner(bytes(data), int(arena_bytes))
    return np.stack([runner.run(np.asarray(row, dtype=np.int8)[None])[0].copy() for row in x_int8])


class LiteRTRunner:
    """LiteRT: default kernels (XNNPACK) or BUILTIN_REF reference kernels (TFLM-equivalent math)."""

    def __init__(self, data: bytes, reference: bool) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.name = "litert_ref" if reference else "litert"
        self._data, self._reference = data, reference
        kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
        # LiteRT's C++ prints "INFO: Created TensorFlow Lite XNNPACK delegate" here (hidden unless --verbose).
        with native_stderr_captured():
            self._interp = Interpreter(model_content=data, experimental_op_resolver_type=kind, num_threads=1)
            self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.input_quant, self.output_quant = _quant(self._in), _quant(self._out)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.input_dtype).reshape(self.input_shape)
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out["index"]))

    def reset(self) -> None:
        self._interp.reset_all_variables()


class OrtRunner:
    """ONNX Runtime (CPU EP, one thread, so pool workers do not oversubscribe the cores)."""

    def __init__(self, path: str | Path, name: str, input_quant: tuple[float, int] = (1.0, 0),
                 output_quant: tuple[float, int] = (1.0, 0)) -> None:
        import onnxruntime as ort

        self.name = name
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 (ORT raises its own exception types for malformed protobufs)
            raise ModelError(f"{path}: ONNX Runtime cannot load this model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300]})") from None
        inp = self._sess.get_inputs()[0]
        self._in_name = inp.name
        self.input_shape = tuple(int(d) if isinstance(d, int) else 1 for d in inp.shape)
        _check_input_size(path, inp.name, self.input_shape)
        self.input_dtype = np.dtype({"tensor(int8)": np.int8, "tensor(uint8)": np.uint8}.get(inp.type, np.float32))
        self.input_quant, self.output_quant = input_quant, output_quant

    def run(self, x: np.ndarray) -> np.ndarray:
        feed = {self._in_name: np.ascontiguousarray(x, dtype=self.input_dtype).reshape(self.input_shape)}
        try:
            return np.asarray(self._sess.run(None, feed)[0])
        except Exception as exc:  # noqa: BLE001 (ORT's own exception types, as above)
            raise ModelError(f"ONNX Runtime failed to run {self.name}: {str(exc).splitlines()[0][:300]}") from None

    def reset(self) -> None:
        pass


def _check_input_size(path: str | Path, name: str, shape: tuple[int, ...]) -> None:
    """Refuse a declared input shape the host would have to allocate (zeros, random latency input)."""
    if any(d < 0 for d in shape):
        raise ModelError(f"{path}: input {name!r} has a negative dimension {list(shape)}")
    elements = math.prod(shape)  # Python ints: no overflow on a hostile shape
    if elements > MAX_INPUT_ELEMENTS:
        raise ModelError(f"{path}: input {name!r} has shape {list(shape)} ({elements:,} elements), more than the "
                         f"{MAX_INPUT_ELEMENTS:,} the simulator accepts (a wake-word input is a few thousand)")


def check_onnx(path: str | Path) -> None:
    """Validate an .onnx file with the onnx checker (pure protobuf parsing; never crashes), and cap the
    declared input sizes before any runtime allocates a tensor of that shape."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 (DecodeError, ValidationError, ...)
        raise ModelError(f"{path}: malformed or invalid ONNX model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300] if str(exc) else 'no detail'})") from None
    initializers = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers or not inp.type.HasField("tensor_type"):
            continue
        # Symbolic or unknown dimensions run with 1 (as OrtRunner feeds them).
        dims = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in inp.type.tensor_type.shape.dim)
        _check_input_size(path, inp.name, dims)


def check_runtimes(model: TfliteModel, runtimes: list[str], arena_size: int) -> dict[str, str | None]:
    """Probe each TFLite runtime on the model in an isolated worker; None = works, else the error."""
    wanted = [r for r in runtimes if r in TFLITE_RUNTIMES]
    if not wanted:
        return {}
    value = run_isolated({"job": "probe", "path": model.path, "runtimes": wanted,
                          "num_inputs": len(model.input_indices), "arena_size": arena_size})
    return {rt: (None if res["ok"] else res["error"]) for rt, res in value.items()}


def make_runner(runtime: str, model: TfliteModel | None = None, *, arena_size: int = 0,
                onnx_path: str | Path | None = None, input_quant: tuple[float, int] = (1.0, 0),
                output_quant: tuple[float, int] = (1.0, 0)) -> Runner:
    if runtime == "tflm":
        assert model is not None
        return TflmRunner(Path(model.path).read_bytes(), arena_size)
    if runtime in ("litert", "litert_ref"):
        assert model is not None
        return LiteRTRunner(Path(model.path).read_bytes(), reference=runtime == "litert_ref")
    if runtime in ("onnx_int8", "onnx_float"):
        assert onnx_path is not None
        return OrtRunner(onnx_path, runtime, input_quant, output_quant)
    raise ValueError(f"unknown runtime {runtime!r}; expected one of {ALL_RUNTIMES}")


def host_latency_ms(runner: Runner, repeats: int = 50, warmup: int = 3, seed: int = 0) -> dict[str, float]:
    """p50/p95 of one invoke on this host (random input in the model's dtype)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"latency repeats must be a positive integer, got {repeats!r}")
    rng = np.random.default_rng(seed)
    if runner.input_dtype.kind in "iu":
        info = np.iinfo(runner.input_dtype)
        x = rng.integers(info.min, info.max + 1, size=runner.input_shape).astype(runner.input_dtype)
    else:
        x = rng.standard_normal(runner.input_shape).astype(runner.input_dtype)
    for _ in range(warmup):
        runner.run(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    runner.reset()
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "repeats": repeats}


def dequantize(y: np.ndarray, quant: tuple[float, int]) -> np.ndarray:
    if y.dtype.kind == "f":
        return y.astype(np.float32)
    return (y.astype(np.float32) - quant[1]) * quant[0]
