"""MFCC features and frame targets: the pipeline of seed 002 sec. 3.1.3.

    waveform x (16 kHz)
      -> pre-emphasis   y(t) = x(t) - 0.97 x(t-1)                  (Eq. 3.1)
      -> frames of 25 ms every 10 ms, the last one zero-padded
      -> Hamming window w[n] = a0 - (1 - a0) cos(2 pi n / (N - 1))  (Eq. 3.2)
      -> power spectrum P = |FFT_512(frame)|^2 / 512                (Eqs. 3.3-3.4)
      -> 40 triangular mel filters, 0 Hz .. fs/2, HTK mel scale     (Eqs. 3.5-3.8)
      -> log (dB) and DCT-II (orthonormal), 13 coefficients         (Eq. 3.9)
      -> first and second derivatives (Savitzky-Golay, 9 frames) -> 39 features
      -> per-utterance normalisation (zero mean, unit variance per feature)
      -> temporal stretch x5: features interpolated linearly between frame
         centres, targets repeated (nearest frame), so one-hot targets stay
         one-hot ("proximally interpolated", sec. 3.1.3).

Where the thesis is ambiguous we follow the common practice it cites (Fayek,
2016) and say so: the text says "26 filterbanks" once and describes 40; we use
40. It says both "12 MFCCs" (dropping c0) and, with the e-prop paper, 39
features; we keep c0..c12 (``drop_c0`` gives c1..c13). It takes no logarithm
before the DCT, which no MFCC definition omits; we take 10 log10. The mel
filters are librosa's continuous triangles on the FFT bin frequencies rather
than Eq. 3.7's rounding of the edges to bins (a difference of under one bin).

librosa is imported lazily so that importing the speech package stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

NORMALIZATIONS = ("utterance", "none")


class FeatureError(ValueError):
    """Invalid feature options or input; the message names the field."""


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FeatureError(f"FeatureOptions.{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(name: str, value, lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise FeatureError(f"FeatureOptions.{name}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise FeatureError(f"FeatureOptions.{name}: must be finite, got {value}")
    if lo is not None and (value < lo or (open_lo and value == lo)):
        raise FeatureError(f"FeatureOptions.{name}: must be {'>' if open_lo else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise FeatureError(f"FeatureOptions.{name}: must be <= {hi}, got {value}")
    return value


@dataclass(frozen=True)
class FeatureOptions:
    """Options of the MFCC pipeline; the defaults are seed 002 sec. 3.1.3.

    sample_rate: Hz the waveform must have (TIMIT: 16000); other rates are
      resampled by :func:`load_and_resample` callers, not here.
    preemphasis: coefficient of Eq. 3.1 (0 disables it).
    frame_ms, hop_ms: frame length and shift (25 ms every 10 ms: 400/160 samples).
    n_fft: DFT size K of Eq. 3.3 (frames are zero-padded to it).
    hamming_a0: a0 of Eq. 3.2; 0.53836 is the thesis' value, 0.54 the classic.
    n_mels, fmin, fmax: mel filterbank (fmax None = sample_rate / 2).
    n_mfcc: cepstral coefficients kept after the DCT; drop_c0 skips c0.
    delta_order: 0 (static only), 1 (+ deltas) or 2 (+ delta-deltas).
    delta_width: odd window (frames) of the Savitzky-Golay derivatives.
    normalize: "utterance" (zero mean, unit variance per feature over each
      utterance) or "none".
    stretch: steps per frame after the temporal stretch (1 = no stretch).
    trim_trailing_silence: drop trailing frames labelled silence (sec. 3.1.3).
    log_floor: power floor before the logarithm.
    """

    sample_rate: int = 16000
    preemphasis: float = 0.97
    frame_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    hamming_a0: float = 0.53836
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    n_mfcc: int = 13
    drop_c0: bool = False
    delta_order: int = 2
    delta_width: int = 9
    normalize: str = "utterance"
    stretch: int = 5
    trim_trailing_silence: bool = True
    log_floor: float = 1e-10

    def __post_init__(self) -> None:
        _positive_int("sample_rate", self.sample_rate)
        _number("preemphasis", self.preemphasis, 0.0, 1.0)
        _number("frame_ms", self.frame_ms, 0.0, open_lo=True)
        _number("hop_ms", self.hop_ms, 0.0, open_lo=True)
        _positive_int("n_fft", self.n_fft, 2)
        if self.frame_length > self.n_fft:
            raise FeatureError(f"FeatureOptions.n_fft: must be >= the frame length "
                               f"({self.frame_length} samples), got {self.n_fft}")
        if self.hop_length < 1:
            raise FeatureError(f"FeatureOptions.hop_ms: {self.hop_ms} ms is under one sample")
        _number("hamming_a0", self.hamming_a0, 0.5, 1.0)
        _positive_int("n_mels", self.n_mels)
        _number("fmin", self.fmin, 0.0)
        nyquist = self.sample_rate / 2
        if self.fmax is not None:
            _number("fmax", self.fmax, 0.0, nyquist)
        if self.fmin >= self.upper_frequency:
            raise FeatureError(f"FeatureOptions.fmin: must be below fmax ({self.upper_frequency}), got {self.fmin}")
        _positive_int("n_mfcc", self.n_mfcc)
        if self.n_mfcc + int(bool(self.drop_c0)) > self.n_mels:
            raise FeatureError(f"FeatureOptions.n_mfcc: at most n_mels - drop_c0 = "
                               f"{self.n_mels - int(bool(self.drop_c0))}, got {self.n_mfcc}")
        if not isinstance(self.drop_c0, bool):
            raise FeatureError(f"FeatureOptions.drop_c0: expected true or false, got {self.drop_c0!r}")
        if self.delta_order not in (0, 1, 2) or isinstance(self.delta_order, bool):
            raise FeatureError(f"FeatureOptions.delta_order: choose 0, 1 or 2, got {self.delta_order!r}")
        _positive_int("delta_width", self.delta_width, 3)
        if self.delta_width % 2 == 0:
            raise FeatureError(f"FeatureOptions.delta_width: must be odd, got {self.delta_width}")
        if self.normalize not in NORMALIZATIONS:
            raise FeatureError(f"FeatureOptions.normalize: unknown value {self.normalize!r}; "
                               f"choose one of {', '.join(NORMALIZATIONS)}")
        _positive_int("stretch", self.stretch)
        if not isinstance(self.trim_trailing_silence, bool):
            raise FeatureError("FeatureOptions.trim_trailing_silence: expected true or false")
        _number("log_floor", self.log_floor, 0.0, open_lo=True)

    # ---------------------------------------------------------------- derived
    @property
    def frame_length(self) -> int:
        return int(round(self.frame_ms * self.sample_rate / 1000.0))

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_ms * self.sample_rate / 1000.0))

    @property
    def upper_frequency(self) -> float:
        return self.sample_rate / 2 if self.fmax is None else float(self.fmax)

    @property
    def n_features(self) -> int:
        return self.n_mfcc * (1 + self.delta_order)

    @property
    def step_ms(self) -> float:
        """Duration of one network step after the stretch (10 ms / 5 = 2 ms)."""
        return self.hop_ms / self.stretch

    def to_dict(self) -> dict:
        return asdict(self)

    def window(self) -> np.ndarray:
        """The symmetric Hamming window of Eq. 3.2 (denominator N - 1)."""
        n = np.arange(self.frame_length)
        return self.hamming_a0 - (1.0 - self.hamming_a0) * np.cos(2 * np.pi * n / (self.frame_length - 1))


def n_frames(n_samples: int, options: FeatureOptions) -> int:
    """Frames of a waveform: one every hop, the last one zero-padded (sec. 3.1.3)."""
    L, H = options.frame_length, options.hop_length
    return 1 + int(math.ceil(max(n_samples - L, 0) / H))


def frame_centers(count: int, options: FeatureOptions) -> np.ndarray:
    """Sample index at the centre of each frame (frame i spans [i H, i H + L))."""
    return np.arange(count) * options.hop_length + options.frame_length / 2.0


def mfcc(signal: np.ndarray, options: FeatureOptions | None = None, sample_rate: int | None = None) -> np.ndarray:
    """Static + dynamic MFCCs (n_frames, n_features), not yet normalised or stretched.

    ``signal`` is a 1-D float or int16 waveform at ``options.sample_rate``
    (passing ``sample_rate`` checks it).
    """
    import librosa

    options = options or FeatureOptions()
    if sample_rate is not None and int(sample_rate) != options.sample_rate:
        raise FeatureError(f"waveform has {sample_rate} Hz, FeatureOptions.sample_rate is {options.sample_rate}; "
                           "resample first (librosa.resample)")
    x = np.asarray(signal)
    if x.ndim != 1:
        raise FeatureError(f"signal: expected a 1-D waveform, got shape {x.shape}")
    if x.size == 0:
        raise FeatureError("signal: empty waveform")
    if x.dtype == np.int16:
        x = x / 32768.0  # TIMIT and the offline corpus store 16-bit PCM
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise FeatureError("signal: contains NaN or infinite samples")

    # Eq. 3.1 with x(-1) = 0 (librosa would extrapolate the initial state otherwise).
    if options.preemphasis > 0:
        x = librosa.effects.preemphasis(x, coef=options.preemphasis, zi=0.0)

    L, H, K = options.frame_length, options.hop_length, options.n_fft
    T = n_frames(x.size, options)
    # librosa centres a short window inside the n_fft frame; padding the start by
    # (K - L) // 2 makes frame i window exactly samples [i H, i H + L) of x. The
    # magnitude spectrum does not depend on where the zeros go (a circular shift).
    left = (K - L) // 2
    total = (T - 1) * H + K
    x = np.pad(x, (left, total - left - x.size))
    window = np.pad(options.window(), (left, K - L - left))
    spec = librosa.stft(x, n_fft=K, hop_length=H, win_length=K, window=window, center=False)
    power = np.abs(spec[:, :T]) ** 2 / K                                   # Eq. 3.4
    fb = librosa.filters.mel(sr=options.sample_rate, n_fft=K, n_mels=options.n_mels, fmin=options.fmin,
                             fmax=options.upper_frequency, htk=True, norm=None, dtype=np.float64)  # Eqs. 3.5-3.8, peak 1
    log_mel = librosa.power_to_db(fb @ power, ref=1.0, amin=options.log_floor, top_db=None)
    first = int(options.drop_c0)
    c = librosa.feature.mfcc(S=log_mel, n_mfcc=options.n_mfcc + first, dct_type=2, norm="ortho")[first:]
    feats = [c]
    if options.delta_order:
        # Savitzky-Golay derivatives need a full window; short inputs repeat their edges.
        mode = "interp" if T >= options.delta_width else "nearest"
        for order in range(1, options.delta_order + 1):
            feats.append(librosa.feature.delta(c, width=options.delta_width, order=order, mode=mode))
    return np.concatenate(feats, axis=0).T.astype(np.float64)


def normalize(features: np.ndarray, options: FeatureOptions, eps: float = 1e-8) -> np.ndarray:
    """Per-utterance normalisation: each feature to zero mean and unit variance."""
    if options.normalize == "none":
        return features
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    return (features - mean) / (std + eps)


def frame_labels(starts: Sequence[int], ends: Sequence[int], labels: Sequence[int], count: int,
                 options: FeatureOptions, fill: int = -1) -> np.ndarray:
    """Label of each frame: the segment that contains the frame's centre sample.

    Segments are TIMIT-style [start, end) sample ranges with integer labels;
    a centre that falls in no segment (a gap, or past the last one) gets the
    nearest segment's label, so every frame has a target; ``fill`` is used
    only when there are no segments at all.
    """
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    lab = np.asarray(labels)
    if not (s.shape == e.shape == lab.shape):
        raise FeatureError("frame_labels: starts, ends and labels must have the same length")
    if s.size == 0:
        return np.full(count, fill, dtype=np.int64)
    centers = frame_centers(count, options)
    mid = (s + e) / 2.0
    inside = (centers[:, None] >= s[None, :]) & (centers[:, None] < e[None, :])
    # distance to each segment (0 inside); nearest segment by distance, then by midpoint
    dist = np.maximum(s[None, :] - centers[:, None], 0) + np.maximum(centers[:, None] - e[None, :] + 1, 0)
    dist = np.where(inside, 0.0, dist) + 1e-9 * np.abs(centers[:, None] - mid[None, :])
    return lab[np.argmin(dist, axis=1)].astype(np.int64)


def stretch(features: np.ndarray, labels: np.ndarray | None, factor: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Temporal stretch by an integer factor (sec. 3.1.3).

    Step j of the output sits at frame position p = (j + 1/2) / factor - 1/2;
    features are linearly interpolated between frame centres (clamped at the
    ends), labels take the nearest frame, which is frame j // factor.
    """
    if factor == 1:
        return features, labels
    T = features.shape[0]
    p = np.clip((np.arange(T * factor) + 0.5) / factor - 0.5, 0, T - 1)
    lo = np.floor(p).astype(np.int64)
    hi = np.minimum(lo + 1, T - 1)
    w = (p - lo)[:, None]
    out = (1 - w) * features[lo] + w * features[hi]
    return out, (None if labels is None else np.repeat(labels, factor))


def utterance_features(signal: np.ndarray, options: FeatureOptions | None = None,
                       segments: tuple[Sequence[int], Sequence[int], Sequence[int]] | None = None,
                       silence: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The whole sec. 3.1.3 pipeline for one utterance.

    Returns the network input (steps, n_features) and, when ``segments``
    (starts, ends, class ids) are given, one class id per step (-1 = no target).
    Trailing frames labelled ``silence`` are trimmed when
    ``options.trim_trailing_silence`` is set (never all of them).
    """
    options = options or FeatureOptions()
    feats = mfcc(signal, options)
    labels = None
    if segments is not None:
        labels = frame_labels(*segments, count=feats.shape[0], options=options)
        if options.trim_trailing_silence and silence is not None:
            keep = labels.size
            while keep > 1 and labels[keep - 1] == silence:
                keep -= 1
            feats, labels = feats[:keep], labels[:keep]
    feats = normalize(feats, options)
    return stretch(feats, labels, options.stretch)
