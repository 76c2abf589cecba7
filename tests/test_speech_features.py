"""MFCC pipeline (seed 002 sec. 3.1.3) against an independent numpy/scipy computation."""

import numpy as np
import pytest

pytest.importorskip("librosa")

from eprop_lava.tasks.speech.features import (  # noqa: E402
    FeatureError, FeatureOptions, frame_labels, mfcc, n_frames, normalize, stretch, utterance_features,
)


def reference_mfcc(x, sr=16000, pre=0.97, L=400, H=160, K=512, a0=0.53836, n_mels=40, n_mfcc=13, width=9):
    """The same steps written out with numpy: no librosa call anywhere."""
    x = x.astype(np.float64)
    y = np.concatenate([[x[0]], x[1:] - pre * x[:-1]])                    # Eq. 3.1, x(-1) = 0
    T = 1 + int(np.ceil(max(len(y) - L, 0) / H))
    y = np.concatenate([y, np.zeros((T - 1) * H + L - len(y))])           # zero-pad the last frame
    n = np.arange(L)
    w = a0 - (1 - a0) * np.cos(2 * np.pi * n / (L - 1))                   # Eq. 3.2
    frames = np.stack([y[i * H:i * H + L] * w for i in range(T)])
    P = np.abs(np.fft.rfft(frames, n=K)) ** 2 / K                          # Eqs. 3.3-3.4
    mel = lambda f: 2595 * np.log10(1 + f / 700)                           # Eq. 3.5
    imel = lambda m: 700 * (10 ** (m / 2595) - 1)                          # Eq. 3.6
    edges = imel(np.linspace(mel(0), mel(sr / 2), n_mels + 2))
    f = np.arange(K // 2 + 1) * sr / K
    fb = np.zeros((n_mels, f.size))
    for i in range(n_mels):
        lo, c, hi = edges[i:i + 3]
        fb[i] = np.clip(np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)), 0, None)  # Eq. 3.8 triangles
    S = 10 * np.log10(np.maximum(P @ fb.T, 1e-10))
    M = n_mels
    k = np.arange(M)
    D = np.sqrt(2 / M) * np.cos(np.pi * np.arange(n_mfcc)[:, None] * (2 * k[None, :] + 1) / (2 * M))
    D[0] /= np.sqrt(2)                                                     # orthonormal DCT-II
    C = S @ D.T
    out = [C]
    half = width // 2
    for order in (1, 2):
        d = np.zeros_like(C)
        for t in range(T):
            lo_ = min(max(t - half, 0), T - width)                         # edge windows: fit and evaluate off-centre
            idx = np.arange(lo_, lo_ + width)
            for j in range(C.shape[1]):
                coef = np.polyfit(idx - t, C[idx, j], order)                # local polynomial of degree `order`
                d[t, j] = coef[0] * (1 if order == 1 else 2)                 # its derivative of that order at t
        out.append(d)
    return np.concatenate(out, axis=1)


@pytest.fixture(scope="module")
def chirp():
    rng = np.random.default_rng(3)
    t = np.arange(int(0.37 * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 * t + 2000 * t ** 2)) + 0.05 * rng.standard_normal(t.size)
    return (x * 32767).astype(np.int16)


def test_mfcc_matches_independent_numpy(chirp):
    ours = mfcc(chirp)
    ref = reference_mfcc(chirp / 32768.0)
    assert ours.shape == ref.shape == (n_frames(chirp.size, FeatureOptions()), 39)
    assert ours.shape[0] == 1 + int(np.ceil((5920 - 400) / 160))  # 36 frames
    scale = np.abs(ref).max(axis=0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-8 * scale.max())
    # each block relative to its own scale (deltas are much smaller than statics)
    for blk in range(3):
        err = np.abs(ours[:, 13 * blk:13 * blk + 13] - ref[:, 13 * blk:13 * blk + 13]).max()
        assert err <= 1e-10 * np.abs(ref[:, 13 * blk:13 * blk + 13]).max()


def test_drop_c0_and_classic_hamming(chirp):
    opts = FeatureOptions(drop_c0=True, delta_order=0, hamming_a0=0.54)
    ours = mfcc(chirp, opts)
    ref = reference_mfcc(chirp / 32768.0, a0=0.54, n_mfcc=14)[:, 1:14]
    assert ours.shape[1] == 13
    np.testing.assert_allclose(ours, ref, atol=1e-9 * np.abs(ref).max())


def test_normalize_stretch_and_labels():
    opts = FeatureOptions()
    f = np.arange(12, dtype=float).reshape(4, 3) ** 2
    z = normalize(f, opts)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-6)
    x, lab = stretch(np.array([[0.0], [10.0], [20.0]]), np.array([4, 5, 6]), 5)
    assert x.shape == (15, 1)
    assert lab.tolist() == [4] * 5 + [5] * 5 + [6] * 5
    # centre-aligned linear interpolation: step 7 sits on frame 1's centre
    np.testing.assert_allclose(x[:, 0], [0, 0, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 20, 20], atol=1e-12)
    # frame i spans [160 i, 160 i + 400), centre 160 i + 200
    lab = frame_labels([0, 500, 900], [500, 900, 1300], [0, 1, 2], 7, opts)
    # centres: 200 360 520 680 840 1000 1160
    assert lab.tolist() == [0, 0, 1, 1, 1, 2, 2]
    # past the last segment -> nearest
    assert frame_labels([0], [300], [9], 3, opts).tolist() == [9, 9, 9]


def test_utterance_features_trims_trailing_silence(chirp):
    opts = FeatureOptions()
    T = n_frames(chirp.size, opts)
    x, lab = utterance_features(chirp, opts, segments=([0, 3000], [3000, chirp.size], [7, 0]), silence=0)
    # frames whose centre >= 3000 are silence and trimmed: centres 160 i + 200 < 3000 -> i <= 17
    assert lab.tolist() == [7] * 18 * 5
    assert x.shape == (18 * 5, 39)
    np.testing.assert_allclose(x[2::5].mean(0), 0, atol=1e-9)  # one step per frame sits on the frame centre
    x2, lab2 = utterance_features(chirp, FeatureOptions(trim_trailing_silence=False, stretch=1),
                                  segments=([0, 3000], [3000, chirp.size], [7, 0]), silence=0)
    assert x2.shape == (T, 39) and lab2[-1] == 0


@pytest.mark.parametrize("field, value", [
    ("preemphasis", 1.5), ("n_fft", 256), ("delta_width", 8), ("normalize", "global"),
    ("stretch", 0), ("n_mfcc", 41), ("fmax", 9000.0), ("delta_order", 3),
])
def test_options_validate(field, value):
    with pytest.raises(FeatureError, match=f"FeatureOptions.{field}"):
        FeatureOptions(**{field: value})


def test_wrong_rate_is_an_error(chirp):
    with pytest.raises(FeatureError, match="resample"):
        mfcc(chirp, sample_rate=22050)
