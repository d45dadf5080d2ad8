"""Tiny stand-ins for the pretrained teachers, built here so no test needs a download or the real
packages: a random Whisper written in CTranslate2 format by CTranslate2's own converter, and
ONNX melspectrogram / embedding models with speech_embedding's input and output signatures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

APACHE_LICENSE = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\n"


def tiny_whisper(seed: int = 0, max_source_positions: int = 1500):  # -> WhisperForConditionalGeneration
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                        decoder_layers=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=max_source_positions, max_target_positions=16,
                        pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)
    model = WhisperForConditionalGeneration(cfg).eval()
    # Random init leaves layer-norm gains at 1 and biases at 0: perturb them so a swapped
    # gamma/beta or a dropped bias cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def write_ct2_whisper(model, folder: Path, quantization: str | None = None) -> Path:
    """`model` saved as a transformers folder, then converted by CTranslate2's TransformersConverter
    (offline: a word-level tokenizer stands in for Whisper's; it does not touch the weights)."""
    import ctranslate2
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    hf_dir, ct2_dir = folder / "hf", folder / "ct2"
    model.save_pretrained(str(hf_dir))
    vocab = {f"t{i}": i for i in range(model.config.vocab_size - 4)}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                            unk_token="t0").save_pretrained(str(hf_dir))
    ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(ct2_dir), quantization=quantization,
                                                                     force=True)
    return ct2_dir


def write_speech_embedding_onnx(folder: Path, *, license_text: str | None = APACHE_LICENSE, seed: int = 0) -> Path:
    """melspectrogram.onnx ([B, S] -> [B, 1, frames, 32], 512-sample frames every 10 ms, as the real one)
    and embedding_model.onnx ([N, 76, 32, 1] -> [N, 1, 1, 96]) with random weights, plus an Apache-2.0
    LICENSE."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def save(nodes, inputs, outputs, inits, name):
        graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(folder / f"{name}.onnx"))

    save([helper.make_node("Unsqueeze", ["input", "ax1"], ["x3"]),
          helper.make_node("Conv", ["x3", "w"], ["c"], strides=[160]),
          helper.make_node("Abs", ["c"], ["a"]),
          helper.make_node("Add", ["a", "one"], ["a1"]),
          helper.make_node("Log", ["a1"], ["l"]),
          helper.make_node("Transpose", ["l"], ["t"], perm=[0, 2, 1]),
          helper.make_node("Unsqueeze", ["t", "ax1"], ["output"])],
         [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"])],
         [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, "frames", 32])],
         [("w", (rng.normal(0, 0.01, (32, 1, 512))).astype(np.float32)),
          ("ax1", np.array([1], np.int64)), ("one", np.array(1.0, np.float32))], "melspectrogram")
    save([helper.make_node("Reshape", ["input_1", "flat"], ["f"]),
          helper.make_node("MatMul", ["f", "w"], ["m"]),
          helper.make_node("Tanh", ["m"], ["h"]),
          helper.make_node("Reshape", ["h", "out_shape"], ["conv2d_19"])],
         [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["n", 76, 32, 1])],
         [helper.make_tensor_value_info("conv2d_19", TensorProto.FLOAT, ["n", 1, 1, 96])],
         [("w", rng.normal(0, 0.05, (76 * 32, 96)).astype(np.float32)),
          ("flat", np.array([-1, 76 * 32], np.int64)), ("out_shape", np.array([-1, 1, 1, 96], np.int64))],
         "embedding_model")
    if license_text is not None:
        (folder / "LICENSE").write_text(license_text)
    return folder


def fake_package(site: Path, module: str, files: dict[str, bytes | str]) -> Path:
    """An importable package `module` under `site` holding `files` (relative paths)."""
    root = site / module
    root.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("")
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return root


def ct2_package_files(ct2_dir: Path, prefix: str = "model/") -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {f"{prefix}model.bin": (ct2_dir / "model.bin").read_bytes(),
                                     f"{prefix}config.json": (ct2_dir / "config.json").read_text()}
    for name in ("vocabulary.json", "vocabulary.txt"):
        if (ct2_dir / name).is_file():
            files[f"{prefix}{name}"] = (ct2_dir / name).read_text()
    if f"{prefix}vocabulary.json" in files:  # CTranslate2 writes JSON; packages ship the .txt form
        files[f"{prefix}vocabulary.txt"] = "\n".join(json.loads(files[f"{prefix}vocabulary.json"])) + "\n"
    return files
