"""Test audio: pure-tone prompts, G.711 u-law decoding, and dominant-frequency detection.

Test prompts are single sine tones of distinct frequencies, so what a caller heard is
proved by the frequency found in the audio it received.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_tone(path: Path, freq: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    samples = (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def _ulaw_table() -> np.ndarray:
    # ITU-T G.711 u-law expansion
    u = np.arange(256, dtype=np.int32) ^ 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    value = magnitude - 0x84
    return np.where(sign != 0, -value, value).astype(np.int16)


ULAW = _ulaw_table()


def decode_pcmu(payload: bytes) -> np.ndarray:
    return ULAW[np.frombuffer(payload, dtype=np.uint8)]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data, rate


def dominant_frequencies(samples: np.ndarray, rate: int = 8000, count: int = 2,
                         min_share: float = 0.05) -> list[float]:
    """The strongest spectral peaks (Hz), strongest first, each holding >= min_share of
    the energy of the strongest."""
    if len(samples) < rate // 10:
        return []
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spec = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    spec[freqs < 60] = 0
    peaks: list[float] = []
    top = spec.max()
    if top <= 0:
        return []
    work = spec.copy()
    width = max(1, int(40 / (freqs[1] - freqs[0])))  # blank +-40 Hz around each peak found
    for _ in range(count):
        i = int(work.argmax())
        if work[i] < min_share * top:
            break
        peaks.append(float(freqs[i]))
        work[max(0, i - width): i + width] = 0
    return peaks


def has_tone(samples: np.ndarray, freq: float, rate: int = 8000, tol: float = 15.0,
             min_share: float = 0.05) -> bool:
    return any(abs(f - freq) <= tol for f in dominant_frequencies(samples, rate, 3, min_share))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0

TONES_TOL = 15.0
