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


def tone_sequence(samples: np.ndarray, tones: dict[str, float], rate: int = 8000, window: float = 0.05,
                  min_seconds: float = 0.15, tol: float = 25.0) -> list[tuple[str, float]]:
    """What was heard, in order: [(tone name, seconds)], silence and unknown sound skipped.

    Windows of `window` s are labelled with the known tone nearest their dominant frequency;
    runs shorter than min_seconds (transients at prompt edges) are dropped, and a tone heard
    again after a gap of silence is a new entry."""
    n = int(rate * window)
    loud = max(rms(samples) * 0.1, 200.0)
    labels: list[str] = []
    for i in range(0, len(samples) - n + 1, n):
        chunk = samples[i:i + n]
        if rms(chunk) < loud:
            labels.append("")
            continue
        spec = np.abs(np.fft.rfft(chunk.astype(np.float64) * np.hanning(n), 8 * n))
        freqs = np.fft.rfftfreq(8 * n, 1 / rate)
        f = float(freqs[int(spec.argmax())])
        name = min(tones, key=lambda k: abs(tones[k] - f))
        labels.append(name if abs(tones[name] - f) <= tol else "?")
    runs: list[tuple[str, float]] = []
    for lab in labels:
        if runs and runs[-1][0] == lab:
            runs[-1] = (lab, runs[-1][1] + window)
        else:
            runs.append((lab, window))
    out: list[tuple[str, float]] = []
    for lab, secs in runs:
        if lab in ("", "?") or secs < min_seconds:
            if lab == "" and secs >= min_seconds and out and out[-1][0] != "":
                out.append(("", secs))
            continue
        if out and out[-1][0] == lab:
            out[-1] = (lab, out[-1][1] + secs)
        else:
            out.append((lab, secs))
    return [(lab, round(s, 2)) for lab, s in out if lab]
