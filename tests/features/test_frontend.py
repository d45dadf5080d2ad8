from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tinyconv.config import FrontendConfig
from tinyconv.features import FeatureCache, StreamingFrontend, clip_features, features_to_int8, fit_clip


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 2000).astype(np.int16)


def test_clip_shape_and_value_grid() -> None:
    f = clip_features(_noise(16000))
    assert f.shape == (98, 40) and f.dtype == np.float32
    # pymicro-features returns uint16 frontend values / 25.6
    assert np.allclose(f * 25.6, np.round(f * 25.6), atol=1e-3)
    assert f.min() >= 0 and f.max() < 30


def test_short_and_long_clips_fit_the_window() -> None:
    assert clip_features(_noise(8000)).shape == (98, 40)
    assert clip_features(_noise(24000)).shape == (98, 40)
    x = np.arange(10, dtype=np.int16)
    assert list(fit_clip(x, 4)) == [6, 7, 8, 9]
    assert list(fit_clip(x[:2], 4)) == [0, 0, 0, 1]


def test_streaming_matches_whole_clip_in_any_chunking() -> None:
    audio = _noise(16000, 1)
    whole = StreamingFrontend().process(audio)
    assert whole.shape == (98, 40)
    fe = StreamingFrontend()
    parts = [fe.process(audio[i : i + 333]) for i in range(0, len(audio), 333)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_int8_quantization() -> None:
    q = features_to_int8(np.array([0.0, 13.0, 100.0]), scale=0.1015625, zero_point=-128)
    assert q.tolist() == [-128, 0, 127]


def test_cache_hits_on_rerun_and_keys_on_content(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    a, b = _noise(16000, 2), _noise(16000, 3)
    fa = cache.features(a)
    cache.features(b)
    assert cache.misses == 2
    again = FeatureCache(tmp_path)
    assert np.array_equal(again.features(a), fa) and again.hits == 1
    other = FeatureCache(tmp_path, FrontendConfig(clip_duration_ms=500))
    assert other.root != cache.root


def test_features_package_does_not_import_torch() -> None:
    code = "import sys, tinyconv.features, tinyconv.metrics, tinyconv.data.dataset; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_clip_features_warm_the_frontend_like_a_running_device() -> None:
    """A cold frontend saturates at the first sound; the pre-roll settles it on the clip's background."""
    rng = np.random.default_rng(4)
    audio = (rng.standard_normal(16000) * 300).astype(np.int16)
    cold = StreamingFrontend().process(audio)
    warm = clip_features(audio)
    assert cold[:10].mean() > warm[:10].mean() + 1.0  # the cold start transient
    assert np.array_equal(warm, clip_features(audio))  # deterministic
    assert abs(cold[-20:].mean() - warm[-20:].mean()) < 1.0  # both settle near the same background
