"""Augmentation baked into synthesized clips: placement, reverberation, noise at an SNR, gain.

Room impulse responses come from pyroomacoustics' image-source simulation. Noise, gain and
shift are a few lines of numpy each; audiomentations would bring librosa and numba for the same
three operations, so they are written here.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from tinyconv.config import AugmentConfig


def simulate_rirs(count: int, sample_rate_hz: int, seed: int) -> list[np.ndarray]:
    """`count` room impulse responses from random shoebox rooms (pyroomacoustics ISM)."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs: list[np.ndarray] = []
    while len(rirs) < count:
        dims = rng.uniform([3.0, 3.0, 2.4], [9.0, 7.0, 3.5])
        rt60 = rng.uniform(0.15, 0.7)
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:
            continue  # the room cannot reach that RT60; draw another
        room = pra.ShoeBox(dims, fs=sample_rate_hz, materials=pra.Material(absorption),
                           max_order=min(max_order, 12))
        src = rng.uniform(0.5, dims - 0.5)
        mic = rng.uniform(0.5, dims - 0.5)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)[: int(0.6 * sample_rate_hz)]
        rirs.append(rir / (np.max(np.abs(rir)) + 1e-9))
    return rirs


def coloured_noise(num_samples: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise with unit RMS, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    noise = np.fft.irfft(spectrum / freqs**exponent, n=num_samples)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def place(speech: np.ndarray, num_samples: int, rng: np.random.Generator, *, end_aligned: bool,
          max_shift: int) -> np.ndarray:
    """Put `speech` in a window of `num_samples`.

    Wake words end near the end of the window (a streaming detector fires when the word ends),
    shifted earlier by up to `max_shift`; other audio lands anywhere. Longer audio is cropped.
    """
    out = np.zeros(num_samples, dtype=np.float32)
    if len(speech) >= num_samples:
        start = len(speech) - num_samples if end_aligned else int(rng.integers(0, len(speech) - num_samples + 1))
        return speech[start : start + num_samples].astype(np.float32)
    slack = num_samples - len(speech)
    offset = slack - int(rng.integers(0, min(max_shift, slack) + 1)) if end_aligned else int(rng.integers(0, slack + 1))
    out[offset : offset + len(speech)] = speech
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def augment_clip(
    clip: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    rirs: list[np.ndarray],
    babble_pool: list[np.ndarray],
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Reverb, additive noise at a random SNR and gain on a placed float clip (int16 scale)."""
    info: dict[str, float | str] = {}
    out = clip.astype(np.float32)
    n = len(out)
    if rirs and rng.random() < cfg.reverb_probability:
        rir = rirs[int(rng.integers(len(rirs)))]
        wet = fftconvolve(out, rir)[:n]
        out = wet * (rms(out) / (rms(wet) + 1e-9))
        info["reverb"] = 1.0
    if rng.random() < cfg.noise_probability:
        kind = str(rng.choice(["white", "pink", "brown", "babble"] if babble_pool else ["white", "pink", "brown"]))
        if kind == "babble":
            noise = np.zeros(n, dtype=np.float32)
            for _ in range(int(rng.integers(3, 7))):
                other = babble_pool[int(rng.integers(len(babble_pool)))].astype(np.float32)
                noise += place(other, n, rng, end_aligned=False, max_shift=0)
            noise /= rms(noise) + 1e-9
        else:
            noise = coloured_noise(n, kind, rng)
        snr_db = float(rng.uniform(cfg.snr_db_min, cfg.snr_db_max))
        level = rms(out)
        if level < 1.0:  # a background clip: noise at a plausible absolute level instead
            level = 10 ** rng.uniform(1.5, 3.3)
            snr_db = 0.0
        out = out + noise * level / (10 ** (snr_db / 20))
        info["noise"] = kind
        info["snr_db"] = round(snr_db, 1)
    gain_db = float(rng.uniform(cfg.gain_db_min, cfg.gain_db_max))
    out = out * 10 ** (gain_db / 20)
    info["gain_db"] = round(gain_db, 1)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16), info
