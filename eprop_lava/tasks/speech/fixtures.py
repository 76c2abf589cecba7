"""Synthetic TIMIT-layout corpora for tests and examples (no TIMIT data).

``make_timit_fixture`` writes the TIMIT folder layout with real SPHERE
headers, .PHN/.WRD/.TXT files, and audio in which every phone is a distinct
tone over noise, so that features, labels and splits can be checked without
the licensed corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eprop_lava.tasks.speech.timit import write_sphere

# Phones used by the synthetic sentences (a mix that folds to several 39-classes).
_PHONES = ("h#", "s", "iy", "v", "ax", "n", "pcl", "p", "aa", "q", "ix", "z", "eh", "dh", "ux")


def _sentence(rng: np.random.Generator, sr: int, n_phones: int) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    inner = [_PHONES[i] for i in rng.integers(1, len(_PHONES), size=n_phones)]
    phones = ["h#"] + inner + ["h#"]
    segs, pos = [], 0
    audio = []
    for p in phones:
        n = int(rng.integers(int(0.04 * sr), int(0.12 * sr)))
        t = np.arange(n) / sr
        k = _PHONES.index(p)
        amp = 0.0 if p == "h#" else 0.4
        x = amp * np.sin(2 * np.pi * (150 + 230 * k) * t) + 0.01 * rng.standard_normal(n)
        audio.append(x)
        segs.append((pos, pos + n, p))
        pos += n
    return (np.concatenate(audio) * 32767 * 0.8).astype(np.int16), segs


def make_timit_fixture(root: str | Path, speakers: dict | None = None, sentences: tuple[str, ...] = (
        "SA1", "SI1001", "SX101", "SX102"), seed: int = 0, sample_rate: int = 16000) -> Path:
    """Write a small TIMIT-layout corpus under ``root`` and return ``root``.

    ``speakers`` maps (part, dialect) -> speaker ids, e.g.
    ``{("TRAIN", "DR1"): ["FCJF0"], ("test", "dr1"): ["mdab0"]}``; the case of
    each name is kept, so mixed-case layouts can be built.
    """
    root = Path(root)
    speakers = speakers or {
        ("TRAIN", "DR1"): ["FCJF0", "MDPK0"],
        ("TRAIN", "DR2"): ["FAEM0"],
        ("test", "dr1"): ["mdab0", "faks0"],   # a core test and a development speaker
        ("test", "DR2"): ["MTAS1", "MWSB0"],   # core, and one that is in neither list
    }
    rng = np.random.default_rng(seed)
    for (part, dr), spks in speakers.items():
        for spk in spks:
            d = root / part / dr / spk
            d.mkdir(parents=True, exist_ok=True)
            for sent in sentences:
                name = sent if spk.isupper() else sent.lower()
                ext = (lambda e: e.upper()) if spk.isupper() else (lambda e: e.lower())
                audio, segs = _sentence(rng, sample_rate, int(rng.integers(4, 9)))
                write_sphere(d / f"{name}.{ext('wav')}", audio, sample_rate,
                             speaker_id=spk[1:].lower(), utterance_id=f"{spk.lower()}_{sent.lower()}")
                (d / f"{name}.{ext('phn')}").write_text("".join(f"{a} {b} {p}\n" for a, b, p in segs))
                words = [(segs[1][0], segs[-2][1], "word")]
                (d / f"{name}.{ext('wrd')}").write_text("".join(f"{a} {b} {w}\n" for a, b, w in words))
                (d / f"{name}.{ext('txt')}").write_text(f"0 {audio.size} Synthetic sentence.\n")
    return root
