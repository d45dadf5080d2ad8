"""Shared fixtures: reference models (skip when absent, fail under CI=true), a tiny model, a tiny spoken dataset."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import reference_model as ref_model  # noqa: F401  (skips here, fails under CI=true)

MWW_MANIFEST_ARENA = {"okay_nabu": 26080, "alexa": 22348, "hey_jarvis": 22860, "vad": 16772}


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tinyconv.firmware_sim.synthetic import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model_int8.tflite", seed=0)


def say(text: str, voice: str = "en-us") -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return np.clip(resample_poly(audio, 16000, rate) * 20000, -32768, 32767).astype(np.int16)


def tiny_onnx(path: Path, *, int8_input: bool, seed: int = 0) -> Path:
    """A linear ONNX classifier over 98x40 features (int8 input -> DequantizeLinear for the 'int8' one)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.01, (3920, 2)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 3920], dtype=np.int64), "shape")
    nodes, inits = [], [w, shape]
    if int8_input:
        inits += [numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s"),
                  numpy_helper.from_array(np.array(-128, dtype=np.int8), "zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xf"]))
        src = "xf"
    else:
        src = "x"
    nodes += [helper.make_node("Reshape", [src, "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.INT8 if int8_input else TensorProto.FLOAT, [1, 98, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def spoken_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 clips: 'hey tiny' and other phrases, split train/test, as `tinyconv data synth` writes them."""
    from tinyconv.data.audio import write_wav

    root = tmp_path_factory.mktemp("dataset")
    rows = ["path,label,split,voice,text,kind"]
    phrases = [("hey tiny", "hey_tiny", "positive")] * 3 + [
        ("good morning", "_negative_", "speech"), ("turn it off", "_negative_", "speech"),
        ("what is the time", "_negative_", "speech")]
    for i, (text, label, kind) in enumerate(phrases * 2):
        voice = ["en-us", "en", "en+f3"][i % 3]
        rel = f"clips/{i:03d}.wav"
        write_wav(root / rel, say(text, voice))
        rows.append(f"{rel},{label},{'test' if i % 2 == 0 or i >= 6 else 'train'},{voice},{text},{kind}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "labels.json").write_text(json.dumps({"labels": ["_negative_", "hey_tiny"], "positive_label": "hey_tiny"}))
    return root


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tflite: Path, spoken_dataset: Path) -> Path:
    """An export folder as `tinyconv export` writes it, around the synthetic tiny model."""
    root = tmp_path_factory.mktemp("export")
    shutil.copy(tiny_tflite, root / "model_int8.tflite")
    tiny_onnx(root / "model_int8.onnx", int8_input=True)
    tiny_onnx(root / "model_float.onnx", int8_input=False)
    manifest = {"format_version": 1, "model_name": "tiny", "labels": ["_negative_", "hey_tiny"],
                "positive_label": "hey_tiny",
                "input": {"shape": [1, 98, 40], "dtype": "int8", "scale": 0.1, "zero_point": -128},
                "output": {"shape": [1, 2], "dtype": "int8", "scale": 0.05, "zero_point": 0},
                "dataset_dir": str(spoken_dataset)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
