"""Speech tasks on the offline corpus or on TIMIT (the Task protocol of
eprop_lava/tasks/base.py).

* :class:`PhoneClassification`: frame-wise phone classification, the TIMIT
  task of seed 002 (sec. 2.2.4 "Error metric", sec. 3.1) and of Bellec et al.
  (2020, Fig. 2). Every step of the stretched feature sequence has a one-hot
  phone target; the metric is the frame error rate over unpadded frames.
* :class:`KeywordClassification`: which digit (zero .. nine) an utterance is,
  decided by the softmax averaged over the utterance (as
  tasks.base.window_decision); offline corpus only (TIMIT has no isolated
  digits).

Batches are time-major (T, B, 39) and padded to the longest utterance of the
batch; ``mask`` is 1 / (frames of that utterance) on its frames and 0 on the
padding, so each utterance weighs the same in the loss (a sum over the batch).
Features are computed once per utterance (sec. 3.1.3 pipeline, before the
stretch) and kept in memory, optionally in ``cache_dir`` as well.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from eprop_lava.engine.network import Batch
from eprop_lava.errors import UserError
from eprop_lava.spec import (
    LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, ReadoutSpec, RegularizationSpec,
)
from eprop_lava.tasks.base import check_option_types, classification_error
from eprop_lava.tasks.speech.features import FeatureOptions, frame_labels, mfcc, normalize, stretch
from eprop_lava.tasks.speech.phones import FOLD_61_TO_39, TIMIT39, TIMIT61, phone_set

SPLITS = ("train", "valid", "test")


class SpeechTaskError(UserError, ValueError):
    """A speech task was configured with an invalid value; the message names it."""


def open_source(data: str | Path, require_complete: bool = True):
    """A built offline corpus (a folder with manifest.json) or a TIMIT root."""
    path = Path(data).expanduser()
    if (path / "manifest.json").is_file():
        from eprop_lava.tasks.speech.corpus import load_corpus

        return load_corpus(path, verify=True)
    from eprop_lava.tasks.speech.timit import TimitCorpus

    return TimitCorpus(path, require_complete=require_complete)


def _is_timit(source) -> bool:
    return type(source).__name__ == "TimitCorpus"


@dataclass
class _Utt:
    x: np.ndarray        # (frames, n_features), normalised, not stretched
    phones: np.ndarray   # (frames,) class ids, -1 = no target
    label: int           # utterance label (digit) or -1


@dataclass
class _SpeechTask:
    data: str | Path
    split: str = "train"
    features: FeatureOptions = field(default_factory=FeatureOptions)
    max_utterances: int | None = None
    cache_dir: str | Path | None = None
    require_complete: bool = True

    metric_name = "error"
    solved_below: float | None = None

    def __post_init__(self) -> None:
        check_option_types(self)
        if self.split not in SPLITS:
            raise SpeechTaskError(f"{type(self).__name__}.split: unknown split {self.split!r}; "
                                  f"choose one of {', '.join(SPLITS)}")
        if not isinstance(self.features, FeatureOptions):
            raise SpeechTaskError(f"{type(self).__name__}.features: expected FeatureOptions")
        if self.max_utterances is not None and (not isinstance(self.max_utterances, int) or self.max_utterances < 1):
            raise SpeechTaskError(f"{type(self).__name__}.max_utterances: expected an integer >= 1 or None")
        self._source = None
        self._cache: dict[str, list[_Utt]] = {}

    # --------------------------------------------------------- subclass API
    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the readout's classes (phones or keywords), in output order."""
        return self._classes()

    def _classes(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _select(self, utterances: list) -> list:
        return utterances

    def _utterance_label(self, utt) -> int:
        return -1

    # ------------------------------------------------------------- data
    @property
    def source(self):
        if self._source is None:
            self._source = open_source(self.data, self.require_complete)
        return self._source

    @property
    def n_inputs(self) -> int:
        return self.features.n_features

    def _phone_ids(self) -> tuple[dict[str, int], int]:
        """Phone name -> class id (-1 = masked) for this source, and the silence id."""
        classes = self._phone_classes()
        index = {p: i for i, p in enumerate(classes)}
        if _is_timit(self.source) and classes == TIMIT39:
            ids = {p: (-1 if f is None else index[f]) for p, f in FOLD_61_TO_39.items()}
            return ids, index["sil"]
        if _is_timit(self.source):
            return dict(index), index["h#"]
        ids = dict(index)
        ids["q"] = -1  # the glottal stop: deleted by the 39 folding
        return ids, index["sil"]

    def _phone_classes(self) -> tuple[str, ...]:
        return TIMIT39

    def utterances(self, split: str | None = None) -> list:
        split = split or self.split
        utts = self._select(self.source.split(split))
        if not utts:
            raise SpeechTaskError(f"{type(self).__name__}: the {split} split of {self.data} has no usable utterances")
        return utts[: self.max_utterances] if self.max_utterances else utts

    def _cache_file(self, split: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps([str(Path(self.data).resolve()), split, type(self).__name__, self._phone_classes(),
                          self.features.to_dict(), self.max_utterances], sort_keys=True, default=str)
        return Path(self.cache_dir) / f"speech-{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def prepared(self, split: str | None = None) -> list[_Utt]:
        """Features and frame targets of every utterance of a split (computed once)."""
        split = split or self.split
        if split in self._cache:
            return self._cache[split]
        path = self._cache_file(split)
        if path is not None and path.is_file():
            with np.load(path) as z:
                lengths = z["lengths"]
                cuts = np.concatenate([[0], np.cumsum(lengths)])
                out = [_Utt(z["x"][a:b], z["phones"][a:b], int(l))
                       for a, b, l in zip(cuts[:-1], cuts[1:], z["labels"])]
            self._cache[split] = out
            return out
        from eprop_lava.progress import Progress

        ids, silence = self._phone_ids()
        opts = self.features
        out = []
        utterances = self.utterances(split)
        bar = Progress(len(utterances), f"MFCC features ({split})", unit="utt")
        for utt in utterances:
            samples, sr, segments = utt.load()
            if sr != opts.sample_rate:
                raise SpeechTaskError(f"{utt.id}: {sr} Hz audio, FeatureOptions.sample_rate is {opts.sample_rate}")
            feats = mfcc(samples, opts)
            lab = frame_labels([s[0] for s in segments], [s[1] for s in segments],
                               [ids[s[2]] for s in segments], feats.shape[0], opts)
            if opts.trim_trailing_silence:
                keep = lab.size
                while keep > 1 and lab[keep - 1] in (silence, -1):
                    keep -= 1
                feats, lab = feats[:keep], lab[:keep]
            out.append(_Utt(normalize(feats, opts).astype(np.float32), lab.astype(np.int16),
                            self._utterance_label(utt)))
            bar.update(1)
        bar.close()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, x=np.concatenate([u.x for u in out]), phones=np.concatenate([u.phones for u in out]),
                     lengths=np.array([u.x.shape[0] for u in out]), labels=np.array([u.label for u in out]))
            tmp.replace(path)
        self._cache[split] = out
        return out

    # ---------------------------------------------------------- batches
    def _make_batch(self, items: list[_Utt]) -> Batch:
        s = self.features.stretch
        K = len(self._classes())
        T = max(u.x.shape[0] for u in items) * s
        B = len(items)
        x = np.zeros((T, B, self.n_inputs))
        target = np.zeros((T, B, K))
        mask = np.zeros((T, B))
        for b, u in enumerate(items):
            xs, ls = stretch(u.x.astype(np.float64), self._step_targets(u), s)
            n = xs.shape[0]
            x[:n, b] = xs
            valid = ls >= 0
            target[np.nonzero(valid)[0], b, ls[valid]] = 1.0
            mask[:n, b] = valid / max(int(valid.sum()), 1)
        labels = np.array([u.label for u in items]) if items[0].label >= 0 else None
        return Batch(x=x, target=target, mask=mask, labels=labels)

    def _step_targets(self, u: _Utt) -> np.ndarray:
        return u.phones.astype(np.int64)

    def batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """``batch_size`` utterances of ``self.split`` drawn from ``rng`` (without
        replacement when the split is large enough)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise SpeechTaskError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        pool = self.prepared()
        idx = rng.choice(len(pool), size=batch_size, replace=batch_size > len(pool))
        return self._make_batch([pool[i] for i in idx])

    def batches(self, split: str | None = None, batch_size: int = 32) -> Iterator[Batch]:
        """Every utterance of a split once, in order (full-split evaluation)."""
        pool = self.prepared(split)
        for start in range(0, len(pool), batch_size):
            yield self._make_batch(pool[start:start + batch_size])

    def evaluate(self, predict, split: str | None = None, batch_size: int = 32) -> float:
        """The metric over a whole split, weighting what the metric counts
        (frames or utterances): ``predict(x) -> y`` maps (T, B, n_in) to (T, B, K)."""
        errors = total = 0.0
        for b in self.batches(split, batch_size):
            n = self._count(b)
            errors += self.metric(predict(b.x), b) * n
            total += n
        return errors / total

    def _count(self, batch: Batch) -> float:
        return float(batch.size)


@dataclass
class PhoneClassification(_SpeechTask):
    """Frame-wise phone classification (seed 002 secs. 2.2.4, 3.1).

    data: a corpus folder built by ``eprop-lava data speech`` or a TIMIT root.
    phones: "39" (folded; the only set of the offline corpus) or "61" (TIMIT,
      the K = 61 readout of the thesis).
    kinds: on the offline corpus, which utterances to use ("digit", "word",
      "sentence"; default all).
    """

    phones: str = "39"
    kinds: tuple[str, ...] | None = None

    name = "speech_phones"

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            phone_set(self.phones)
        except ValueError as exc:
            raise SpeechTaskError(f"PhoneClassification.phones: {exc}") from None

    def _phone_classes(self) -> tuple[str, ...]:
        if self.phones == "61":
            if not _is_timit(self.source):
                raise SpeechTaskError("PhoneClassification.phones: the offline corpus is labelled with the "
                                      "39-phone set; use phones='39'")
            return TIMIT61
        return TIMIT39

    def _classes(self) -> tuple[str, ...]:
        return self._phone_classes()

    def _select(self, utterances: list) -> list:
        if self.kinds is None or _is_timit(self.source):
            return utterances
        return [u for u in utterances if u.kind in self.kinds]

    def default_spec(self) -> NetworkSpec:
        return default_spec(n_inputs=self.n_inputs, n_outputs=len(phone_set(self.phones)),
                            step_ms=1.0)

    def metric(self, y: np.ndarray, batch: Batch) -> float:
        """Frame error rate over the frames that have a target."""
        valid = batch.mask > 0
        wrong = (np.argmax(y, -1) != np.argmax(batch.target, -1)) & valid
        return float(wrong.sum() / max(valid.sum(), 1))

    def _count(self, batch: Batch) -> float:
        return float((batch.mask > 0).sum())


@dataclass
class KeywordClassification(_SpeechTask):
    """Which digit an utterance says (utterance-level, offline corpus).

    The target is the digit's one-hot at every frame of the utterance; the
    decision averages the softmax over those frames (tasks.base.window_decision).
    """

    name = "speech_keywords"

    def __post_init__(self) -> None:
        super().__post_init__()

    def _select(self, utterances: list) -> list:
        if _is_timit(self.source):
            raise SpeechTaskError("KeywordClassification: TIMIT has no isolated digits; use the offline corpus "
                                  "(eprop-lava data speech --out DIR)")
        return [u for u in utterances if u.kind == "digit"]

    def _utterance_label(self, utt) -> int:
        return int(utt.label)

    def _classes(self) -> tuple[str, ...]:
        return ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

    def _step_targets(self, u: _Utt) -> np.ndarray:
        return np.full(u.x.shape[0], u.label, dtype=np.int64)

    def default_spec(self) -> NetworkSpec:
        return default_spec(n_inputs=self.n_inputs, n_outputs=10, step_ms=1.0)

    def metric(self, y: np.ndarray, batch: Batch) -> float:
        return classification_error(y, batch)


def default_spec(n_inputs: int = 39, n_outputs: int = 39, step_ms: float = 1.0) -> NetworkSpec:
    """A network like Bellec et al.'s TIMIT LSNN (official
    ``solve_timit_with_framewise_lsnn.py`` of github.com/IGITUGraz/eligibility_propagation), one
    direction: 300 LIF + 100 ALIF, tau_m = 20 ms, tau_a = 200 ms, beta = 1.8
    with Bellec's scaling (about 0.18), n_ref = 2, readout tau_out = 3 steps;
    each 10-ms frame lasts 5 steps of 1 ms (their n_repeat = 5, our stretch);
    symmetric e-prop as the thesis (sec. 2.2.4), Adam lr 0.01, firing-rate
    regularisation to 10 Hz with coefficient 50, L2 1e-5. Thresholds and the
    regularisation strength are starting points for tuning, not a replication.
    """
    params = NeuronParams(tau_m=20.0, n_ref=2, tau_a=200.0, beta=1.8)
    return NetworkSpec(
        n_inputs=n_inputs,
        layers=(LayerSpec(size=400, neuron="alif", adaptive_fraction=0.25, params=params),),
        readout=ReadoutSpec(n_outputs=n_outputs, kappa=math.exp(-1.0 / 3.0)),
        loss="cross_entropy",
        learning=LearningSpec(variant="symmetric"),
        regularization=RegularizationSpec(form="bellec", target_hz=10.0, coefficient=50.0, l2=1e-5),
        optimizer=OptimizerSpec(kind="adam", lr=0.01),
        dt=step_ms,
    )
