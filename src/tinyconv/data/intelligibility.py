"""The intelligibility gate: Whisper listens to every natural-voice wake word and near miss.

Kokoro's Japanese voices speaking English through hibari's phonemizer, and extrapolated Kokoro
blends, sometimes say something else than their text ("hey tiny" heard as "Hey Tonya!"). A
positive that does not say the wake word teaches the detector to fire on other words; a near
miss that does say it teaches it to ignore the wake word. `WhisperGate` (data.intelligibility_gate:
a folder written by `tinyconv teacher import --whisper tiny.en|base`) transcribes each gated clip
(tinyconv.data.natural_tts.GATED_KINDS, natural voices only) and `keep` decides:

- a positive is kept only when Whisper heard the wake word;
- a near miss or another assistant's wake word is dropped when Whisper heard the wake word.

"Heard the wake word" (`WakeWordMatcher`): some run of consecutive transcript words is
pronounced exactly like the wake word, as espeak-ng's phonemes (stress removed) of each word
say. That is the notion of "the same as the wake word" the near-miss generator already uses
(tinyconv.data.phrases.confusable_phrases drops phrases at phoneme distance 0 as positives in
disguise), so the two agree; it folds spelling variants that sound the same ("Hey, Tiny.",
"hay tiny", "OK nabu" for "okay nabu", "2" for "two") and nothing that sounds different ("hey
tidy", one phoneme away, is a near miss, not the wake word). The spelling with the spaces left
out counts too ("Heytiny.": Whisper sometimes joins short words, and espeak-ng reads a joined
word differently). Without espeak-ng, only spellings are compared.

Whisper runs greedy (one beam), in English (tiny.en; a multilingual model is told <|en|>
<|transcribe|>), without timestamps, on each clip zero-padded to Whisper's 30 s window: a
shorter window makes Whisper loop ("Hey tiny. Hey tiny. Hey tiny..."); these are the outputs
CTranslate2's own decoder gives for the same model. Measured on two shared cores: ~0.5-1 s a
clip for tiny.en in batches of 16, the encoder's 30 s window most of it. Transcripts are cached
by content (weights, tokenizer, audio) under data.tts_cache_dir/whisper, beside the cached
natural-voice audio, so a second run over the same clips does not run Whisper again.

The imported folder holds a `transformers` WhisperModel (encoder and decoder; the output
projection is the token embedding, as in every released Whisper), its WhisperFeatureExtractor and
the package's `tokenizer.json`. Missing or damaged, it is a GateError naming the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinyconv.data.natural_tts import GateError, GateItem, GateVerdict
from tinyconv.hashing import file_sha256

# Files `tinyconv teacher import --whisper` writes that the gate reads (plus the weights).
GATE_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json")
WHISPER_RATE_HZ = 16000
# Gated texts are a few words; a longer transcript is Whisper looping, and its start is enough.
MAX_NEW_TOKENS = 32
BATCH_SIZE = 16


def keep(kind: str, heard_wake_word: bool) -> bool:
    """The rule: a positive must be heard as the wake word, every other gated kind must not."""
    return heard_wake_word if kind == "positive" else not heard_wake_word


def normalize_words(text: str) -> list[str]:
    """Lowercase words without punctuation or accents: "Hey, Tiny!" -> ["hey", "tiny"];
    "hey-tiny" -> ["hey", "tiny"]; "don't" stays one word."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^a-z0-9']+", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


class WakeWordMatcher:
    """Does a transcript say the wake word? Some run of its consecutive words is pronounced
    exactly as the wake word (espeak-ng phonemes per word, joined), or spelled as it with the
    spaces left out ("Heytiny."); see the module docstring."""

    def __init__(self, wake_word: str, voice: str = "en-us") -> None:
        self.voice = voice
        self._sounds: dict[str, str] = {}
        self.words = normalize_words(wake_word)
        if not self.words:
            raise GateError(f"the wake word {wake_word!r} has no letters or digits to listen for")
        self.target = "".join(self._sound_of(self.words))
        self.spelled = "".join(self.words)

    def _sound_of(self, words: Sequence[str]) -> list[str]:
        from tinyconv.data.phrases import phonemes_of

        new = sorted({w for w in words if w not in self._sounds})
        if new:
            # One espeak-ng call for every new word; without espeak-ng ("") a word is its spelling.
            for word, sound in zip(new, phonemes_of(new, self.voice), strict=True):
                self._sounds[word] = sound or word
        return [self._sounds[w] for w in words]

    def heard(self, transcript: str) -> bool:
        words = normalize_words(transcript)
        for joined in (self._sound_of(words), words):
            target = self.target if joined is not words else self.spelled
            for start in range(len(joined)):
                run = ""
                for part in joined[start:]:
                    run += part
                    if run == target:
                        return True
                    if len(run) >= len(target):
                        break
        return False


def check_folder(folder: str | Path, key: str = "data.intelligibility_gate") -> Path:
    """`folder` if it looks like a full Whisper import, else a GateError naming `key` and it."""
    path = Path(folder).expanduser()
    how = f"import one with `tinyconv teacher import --whisper tiny.en --out {path}`"
    if not path.is_dir():
        raise GateError(f"{key}: the Whisper folder {path} does not exist; {how}")
    missing = [name for name in GATE_FILES if not (path / name).is_file()]
    if missing:
        old = " (imported by an older tinyconv, which kept no tokenizer)" if missing == ["tokenizer.json"] else ""
        raise GateError(f"{key}: {path} is not a complete Whisper import: {', '.join(missing)} missing{old}; "
                        f"import it again: tinyconv teacher import --whisper tiny.en --out {path}")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GateError(f"{key}: {path}/config.json is damaged ({_first_line(exc)}); {how}") from None
    if not isinstance(config, dict) or config.get("model_type") != "whisper":
        raise GateError(f"{key}: {path} does not hold a Whisper model (config.json model_type "
                        f"{config.get('model_type') if isinstance(config, dict) else None!r}); {how}")
    if "WhisperEncoder" in (config.get("architectures") or []):
        raise GateError(f"{key}: {path} holds only a Whisper encoder (a trained teacher); the gate needs the "
                        f"decoder too: {how}")
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class WhisperGate:
    """A tinyconv.data.natural_tts.ClipGate: Whisper transcribes each clip, `keep` judges it."""

    def __init__(self, folder: str | Path, wake_word: str, *, batch_size: int = BATCH_SIZE,
                 cache_dir: str | None = None, key: str = "data.intelligibility_gate") -> None:
        self.folder = check_folder(folder, key)
        self.wake_word = wake_word
        self.batch_size = max(1, int(batch_size))
        self.matcher = WakeWordMatcher(wake_word)
        # Transcripts are cached by content (model weights, audio) beside the natural-voice audio
        # (data.tts_cache_dir; None or "" = off): a second run over cached clips skips Whisper.
        self.cache = TranscriptCache(cache_dir) if cache_dir else None
        self.transcribed = self.cached = 0
        try:
            self._load()
        except GateError:
            raise
        except Exception as exc:  # noqa: BLE001 (safetensors, transformers, tokenizers: any of them on a bad file)
            raise GateError(f"{key}: the Whisper folder {self.folder} is damaged ({type(exc).__name__}: "
                            f"{_first_line(exc)}); import it again: tinyconv teacher import --whisper tiny.en "
                            f"--out {self.folder}") from None

    def _load(self) -> None:
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor, WhisperModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar inside synthesis
        self.model = WhisperModel.from_pretrained(str(self.folder), local_files_only=True).eval()
        self.features = WhisperFeatureExtractor.from_pretrained(str(self.folder), local_files_only=True)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        cfg = self.model.config
        ids = {name: self.tokenizer.token_to_id(f"<|{name}|>")
               for name in ("endoftext", "startoftranscript", "notimestamps", "en", "transcribe")}
        for name in ("endoftext", "startoftranscript", "notimestamps"):
            if ids[name] is None:
                raise GateError(f"{self.folder}/tokenizer.json has no <|{name}|> token: not a Whisper tokenizer")
        if self.tokenizer.get_vocab_size(with_added_tokens=True) > cfg.vocab_size + 16:
            raise GateError(f"{self.folder}: tokenizer.json ({self.tokenizer.get_vocab_size()} tokens) does not "
                            f"belong to the model ({cfg.vocab_size} tokens)")
        self.eot = int(ids["endoftext"])
        # English-only models (tiny.en: 51864 tokens) start <|startoftranscript|><|notimestamps|>;
        # multilingual ones (51865) are told the language and the task first.
        multilingual = cfg.vocab_size >= 51865 and ids["en"] is not None and ids["transcribe"] is not None
        self.prompt = [int(ids["startoftranscript"])]
        if multilingual:
            self.prompt += [int(ids["en"]), int(ids["transcribe"])]
        self.prompt.append(int(ids["notimestamps"]))
        self.suppress = sorted({int(t) for t in (cfg.suppress_tokens or []) if 0 <= int(t) < cfg.vocab_size})
        self.begin_suppress = sorted({int(t) for t in (cfg.begin_suppress_tokens or [])
                                      if 0 <= int(t) < cfg.vocab_size})

    def about(self) -> dict[str, Any]:
        """How this gate decides and what it did: recorded in the dataset's labels.json."""
        meta: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):  # no or an unreadable record: the variant is "?"
            meta = json.loads((self.folder / "tinyconv_import.json").read_text())
        return {"whisper": str(self.folder), "variant": meta.get("variant", "?") if isinstance(meta, dict) else "?",
                "wake_word": self.wake_word, "transcribed": self.transcribed, "from_cache": self.cached,
                "rule": "positive kept only when heard as the wake word; confusable and other_wake_word dropped "
                        "when heard as it (same espeak-ng phonemes)"}

    def transcribe(self, audios: Sequence[np.ndarray], sample_rate_hz: int = WHISPER_RATE_HZ) -> list[str]:
        """Greedy English transcripts of int16 (or float in [-1, 1]) mono clips, in one batch."""
        import torch

        from tinyconv.data.audio import resample

        waves = []
        for a in audios:
            x = np.asarray(a)
            x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
            if sample_rate_hz != WHISPER_RATE_HZ:
                x = resample(x, sample_rate_hz, WHISPER_RATE_HZ)
            waves.append(x if x.size else np.zeros(WHISPER_RATE_HZ // 10, np.float32))
        # Padded to Whisper's 30 s window (the feature extractor's default): see the module docstring.
        feats = self.features(waves, sampling_rate=WHISPER_RATE_HZ, return_tensors="pt")["input_features"]
        with torch.inference_mode():
            return self._greedy(feats)

    def _greedy(self, feats: Any) -> list[str]:
        import torch
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        encoded = self.model.encoder(feats).last_hidden_state
        batch = encoded.shape[0]
        head = self.model.decoder.embed_tokens.weight  # Whisper's output projection is tied to it
        tokens = torch.tensor([self.prompt] * batch)
        done = torch.zeros(batch, dtype=torch.bool)
        out: list[list[int]] = [[] for _ in range(batch)]
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for step in range(MAX_NEW_TOKENS):
            hidden = self.model.decoder(input_ids=tokens, encoder_hidden_states=encoded, past_key_values=cache,
                                        use_cache=True)
            cache = hidden.past_key_values
            logits = hidden.last_hidden_state[:, -1] @ head.T
            logits[:, self.eot + 1 :] = -torch.inf  # timestamps and other special tokens
            if self.suppress:
                logits[:, self.suppress] = -torch.inf
            if step == 0 and self.begin_suppress:
                logits[:, self.begin_suppress] = -torch.inf  # no empty transcript, no leading blank
            nxt = logits.argmax(-1)
            for i in range(batch):
                if not done[i] and int(nxt[i]) != self.eot:
                    out[i].append(int(nxt[i]))
            done |= nxt == self.eot
            if bool(done.all()):
                break
            tokens = nxt[:, None]
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]

    def __call__(self, items: Sequence[GateItem]) -> list[GateVerdict]:
        return [GateVerdict(keep(item.kind, self.matcher.heard(text)), text)
                for item, text in zip(items, self.transcripts(items), strict=True)]

    def transcripts(self, items: Sequence[GateItem]) -> list[str]:
        """What Whisper hears in each item: from the cache, else transcribed in batches."""
        from tqdm import tqdm

        keys = [self._key(item) for item in items] if self.cache else [""] * len(items)
        said: list[str | None] = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [i for i, text in enumerate(said) if text is None]
        self.cached += len(items) - len(todo)
        bar = tqdm(total=len(todo), desc="whisper gate", unit="clip", leave=False, disable=None)
        try:
            # Batches of one sample rate (synthesis gives one; other callers may mix them).
            todo.sort(key=lambda i: items[i].sample_rate_hz)
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                for rate in sorted({items[i].sample_rate_hz for i in batch}):
                    part = [i for i in batch if items[i].sample_rate_hz == rate]
                    for i, text in zip(part, self.transcribe([items[i].audio for i in part], rate), strict=True):
                        said[i] = text
                        if self.cache:
                            self.cache.put(keys[i], text)
                self.transcribed += len(batch)
                bar.update(len(batch))
        finally:
            bar.close()
        return [text or "" for text in said]

    def _key(self, item: GateItem) -> str:
        from tinyconv.data.tts_cache import cache_key

        if not hasattr(self, "_model_id"):
            weights = sorted(self.folder.glob("*.safetensors"))
            self._model_id = [file_sha256(p) for p in weights] + [file_sha256(self.folder / "tokenizer.json")]
        audio = hashlib.sha256(np.ascontiguousarray(item.audio).tobytes()).hexdigest()
        return cache_key(what="whisper-transcript", model=self._model_id, prompt=self.prompt, audio=audio,
                         dtype=str(np.asarray(item.audio).dtype), rate_hz=item.sample_rate_hz,
                         max_new_tokens=MAX_NEW_TOKENS)


class TranscriptCache:
    """Whisper transcripts by key under `root`/whisper (UTF-8 text files, written atomically by
    tinyconv.data.tts_cache.store_entry, as the audio cache is; a cache that cannot be written is skipped)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.expanduser(str(root))) / "whisper"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.txt"

    def get(self, key: str) -> str | None:
        try:
            return self.path(key).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def put(self, key: str, text: str) -> None:
        from tinyconv.data.tts_cache import store_entry

        store_entry(self.path(key), text.encode("utf-8"))


def gate_from_config(config: Any) -> WhisperGate | None:
    """The gate data.intelligibility_gate asks for (None when it is ""), caching its transcripts in
    data.tts_cache_dir."""
    folder = config.data.intelligibility_gate
    return WhisperGate(folder, config.data.wake_word, cache_dir=config.data.tts_cache_dir) if folder else None


__all__ = ["WakeWordMatcher", "WhisperGate", "check_folder", "gate_from_config", "keep", "normalize_words"]
