"""The offline spoken corpus: eSpeak NG speech with TIMIT-style alignments.

``build_corpus(out_dir)`` synthesizes, once, a corpus that the speech tasks
can use without TIMIT (docs/speech.md):

* speakers are eSpeak NG voices ``<accent>+<variant>`` (8 English accents x
  24 variants by default); each utterance draws its own rate, pitch and
  intonation range, so no two renditions are alike;
* material: the ten digits (``zero`` .. ``nine``, the keyword task), twenty
  further words, and short sentences;
* the split is by voice variant, the analogue of TIMIT's speakers: the test
  and validation variants are never heard in training, in any accent;
* each utterance is 16 kHz 16-bit PCM (resampled from eSpeak's 22050 Hz with
  a polyphase filter) plus ``.phn`` (``start end phone`` in samples, phones of
  the TIMIT 39 set, ``q`` for the glottal stop that the folding deletes),
  ``.wrd`` (word segments) and ``.esp`` (the raw eSpeak phonemes);
* ``manifest.json`` records the options, the eSpeak version and a SHA-256 of
  every file. Synthesis is not bit-reproducible, so the corpus is written
  once (into a temporary folder renamed into place when complete) and reused;
  loading verifies the checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from eprop_lava.errors import UserError
from eprop_lava.tasks.speech.phones import TIMIT39, espeak_to_39

FORMAT = "eprop-lava-speech-corpus"
VERSION = 1
SAMPLE_RATE = 16000
MANIFEST = "manifest.json"
CORPUS_PHONES = TIMIT39 + ("q",)

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "bird", "house", "thing", "measure", "church", "judge", "boy", "water", "happy", "should",
)
SENTENCES = (
    "The cat sat on the warm mat.",
    "Bring me three red apples.",
    "She wrote nine short letters.",
    "A boy threw the ball over the fence.",
    "We should judge the choice by its result.",
    "The wind moved the tall green trees.",
    "Put the cups and plates away.",
    "Our house is near the old church.",
    "He measured the thick wooden board.",
    "The ship sailed past the quiet harbor.",
    "My father enjoys hot coffee at dawn.",
    "Dogs bark when the door bell rings.",
    "Seven birds sang in the early morning.",
    "Please call me back after lunch.",
    "The yellow van stopped at the corner.",
    "Rain fell on the soft brown earth.",
    "They hid the treasure under a rock.",
    "Her voice was calm and clear.",
    "Fresh bread smells good in the kitchen.",
    "The pilot checked the map twice.",
    "Join us for a walk by the river.",
    "Thin ice cracked beneath his boots.",
    "Few people knew the secret path.",
    "Zebras graze on the open plain.",
    "The usual answer is often wrong.",
    "Good things come to those who wait.",
    "A loud noise woke the sleeping child.",
    "Each player took a turn at the wheel.",
    "The vision of the future was bright.",
    "Move the chair closer to the fire.",
    "Oil and water do not mix.",
    "Jump over the puddle quickly.",
    "The king wore a heavy golden crown.",
    "Two owls watched from the barn roof.",
    "Shake the bottle before you pour it.",
    "Eight boats floated in the bay.",
    "I think the weather will change soon.",
    "The garage door was painted blue.",
    "Look at the pleasure on her face.",
    "Four wise men crossed the desert.",
)
ACCENTS = ("en-us", "en-us-nyc", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "adam", "anika", "linda", "paul", "steph",
)
SPLITS = ("train", "valid", "test")


class CorpusError(UserError, ValueError):
    """The corpus options, folder or files are invalid; the message names the field or file."""


def _int_range(name: str, value, lo: int, hi: int) -> tuple[int, int]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
        raise CorpusError(f"CorpusOptions.{name}: expected (low, high) integers, got {value!r}")
    a, b = value
    if not lo <= a <= b <= hi:
        raise CorpusError(f"CorpusOptions.{name}: need {lo} <= low <= high <= {hi}, got {value!r}")
    return int(a), int(b)


@dataclass(frozen=True)
class CorpusOptions:
    """What to synthesize. Every speaker (accent x variant) says each digit
    ``digit_repeats`` times, each extra word once, and ``sentences_per_speaker``
    sentences drawn from ``sentences``.

    rate: words per minute (eSpeak 80-450); pitch and intonation: eSpeak's
      0-100 base pitch and pitch range; each utterance draws them uniformly.
    pad_ms: silence added before and after, drawn per utterance (TIMIT's h#).
    noise: standard deviation of white noise over the whole utterance, as a
      fraction of full scale (keeps silence from being digital zero).
    seed: fixes every draw (the recipe, not the audio: see module doc).
    """

    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    test_variants: tuple[str, ...] = ("m3", "f2", "klatt2", "Annie", "paul")
    valid_variants: tuple[str, ...] = ("m6", "f4", "steph")
    digits: tuple[str, ...] = DIGITS
    words: tuple[str, ...] = WORDS
    sentences: tuple[str, ...] = SENTENCES
    digit_repeats: int = 2
    sentences_per_speaker: int = 5
    rate: tuple[int, int] = (120, 220)
    pitch: tuple[int, int] = (25, 75)
    intonation: tuple[int, int] = (20, 80)
    pad_ms: tuple[int, int] = (50, 250)
    noise: float = 3e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("accents", "variants", "test_variants", "valid_variants", "digits", "words", "sentences"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
                value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v.strip() for v in value):
                raise CorpusError(f"CorpusOptions.{name}: expected a list of non-empty strings, got {value!r}")
            if len(set(value)) != len(value):
                raise CorpusError(f"CorpusOptions.{name}: has duplicates")
        for name in ("rate", "pitch", "intonation", "pad_ms"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.accents:
            raise CorpusError("CorpusOptions.accents: at least one accent is required")
        for name in ("test_variants", "valid_variants"):
            extra = set(getattr(self, name)) - set(self.variants)
            if extra:
                raise CorpusError(f"CorpusOptions.{name}: {sorted(extra)} not in variants")
        if set(self.test_variants) & set(self.valid_variants):
            raise CorpusError("CorpusOptions.valid_variants: overlaps test_variants")
        if not set(self.variants) - set(self.test_variants) - set(self.valid_variants):
            raise CorpusError("CorpusOptions.variants: no variant is left for training")
        if not self.digits and not self.words and not (self.sentences and self.sentences_per_speaker):
            raise CorpusError("CorpusOptions: nothing to synthesize (no digits, words or sentences)")
        for name in ("digit_repeats", "sentences_per_speaker", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CorpusError(f"CorpusOptions.{name}: expected an integer >= 0, got {v!r}")
        if self.sentences_per_speaker > len(self.sentences):
            raise CorpusError(f"CorpusOptions.sentences_per_speaker: at most {len(self.sentences)} "
                              f"(the number of sentences), got {self.sentences_per_speaker}")
        _int_range("rate", self.rate, 80, 450)
        _int_range("pitch", self.pitch, 0, 100)
        _int_range("intonation", self.intonation, 0, 100)
        _int_range("pad_ms", self.pad_ms, 0, 2000)
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not 0 <= self.noise < 0.1:
            raise CorpusError(f"CorpusOptions.noise: expected a number in [0, 0.1), got {self.noise!r}")

    def split_of(self, variant: str) -> str:
        if variant in self.test_variants:
            return "test"
        if variant in self.valid_variants:
            return "valid"
        return "train"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as stored in the manifest

    @classmethod
    def small(cls, **changes) -> "CorpusOptions":
        """A corpus of a few hundred utterances (tests, quick looks)."""
        base = dict(accents=("en-us", "en"), variants=("m1", "f1", "m3", "f2", "m6"),
                    test_variants=("m3", "f2"), valid_variants=("m6",), words=("yes", "no", "stop"),
                    digit_repeats=1, sentences_per_speaker=1)
        base.update(changes)
        return cls(**base)


# ---------------------------------------------------------------- utterances
@dataclass(frozen=True)
class CorpusUtterance:
    """One utterance of a built corpus (a manifest entry)."""

    root: Path
    id: str            # "<split>/<accent>_<variant>/<name>"
    split: str
    speaker: str
    accent: str
    variant: str
    kind: str          # "digit", "word" or "sentence"
    text: str
    label: int         # digit value for kind == "digit", else -1
    n_samples: int
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def wav(self) -> Path:
        return self.root / f"{self.id}.wav"

    @property
    def phn(self) -> Path:
        return self.root / f"{self.id}.phn"

    def load(self) -> tuple[np.ndarray, int, list[tuple[int, int, str]]]:
        """(int16 samples, 16000, [(start, end, phone39 or 'q'), ...])."""
        from scipy.io import wavfile

        try:
            sr, samples = wavfile.read(str(self.wav))
        except (OSError, ValueError) as exc:
            raise CorpusError(f"{self.wav}: unreadable ({exc})") from None
        segments = []
        for i, line in enumerate(self.phn.read_text().splitlines(), 1):
            parts = line.split()
            if len(parts) != 3 or parts[2] not in CORPUS_PHONES:
                raise CorpusError(f"{self.phn}:{i}: expected 'start end phone' with a corpus phone, got {line!r}")
            segments.append((int(parts[0]), int(parts[1]), parts[2]))
        return samples, int(sr), segments


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class SpeechCorpus:
    """A built corpus: its manifest and utterances. Use :func:`load_corpus`."""

    root: Path
    manifest: dict
    utterances: list[CorpusUtterance]

    def split(self, name: str) -> list[CorpusUtterance]:
        if name not in SPLITS:
            raise CorpusError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return [u for u in self.utterances if u.split == name]

    @property
    def options(self) -> dict:
        return self.manifest["options"]


def load_corpus(root: str | Path, verify: bool = True) -> SpeechCorpus:
    """Read a corpus folder; with ``verify`` check every file against the
    manifest's SHA-256 (an edited, truncated or missing file is an error)."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise CorpusError(f"{root}: not a built speech corpus (no {MANIFEST}); "
                          "build it with `eprop-lava data speech --out DIR`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CorpusError(f"{path}: not a version-{VERSION} {FORMAT} manifest")
    utts = []
    for entry in manifest["utterances"]:
        for ext, digest in entry["files"].items():
            f = root / f"{entry['id']}.{ext}"
            if not f.is_file():
                raise CorpusError(f"{f}: listed in the manifest but missing; rebuild the corpus")
            if verify and _sha256(f) != digest:
                raise CorpusError(f"{f}: checksum differs from {MANIFEST} (edited or corrupted); "
                                  "rebuild with `eprop-lava data speech --out DIR --overwrite`")
        utts.append(CorpusUtterance(root, entry["id"], entry["split"], entry["speaker"], entry["accent"],
                                    entry["variant"], entry["kind"], entry["text"], entry["label"],
                                    entry["n_samples"], {k: entry[k] for k in ("rate", "pitch", "intonation")}))
    return SpeechCorpus(root, manifest, utts)


# -------------------------------------------------------------------- build
def _segments(synth, pad: int, total: int) -> tuple[list, list]:
    """Phone segments [(start, end, espeak_name)] at the native rate, with the
    leading and trailing padding as pauses; segment k = [onset_k, onset_{k+1})."""
    n = synth.samples.size
    onsets = [(min(max(s, 0), n), p) for s, p in synth.phonemes]
    segs = [(0, pad + (onsets[0][0] if onsets else n), "_")]
    for k, (s, p) in enumerate(onsets):
        end = onsets[k + 1][0] if k + 1 < len(onsets) else n
        segs.append((pad + s, pad + end, p))
    segs.append((pad + n, total, "_"))
    return [s for s in segs if s[1] > s[0]], onsets


def _to_rate(x: int, ratio: float) -> int:
    return int(round(x * ratio))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _wav_bytes(samples: np.ndarray) -> bytes:
    import io

    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, SAMPLE_RATE, samples.astype(np.int16))
    return buf.getvalue()


def _plan(options: CorpusOptions) -> list[dict]:
    """Every utterance to synthesize, with its draws (deterministic in the seed)."""
    rng = np.random.default_rng(options.seed)
    plan = []
    for accent in options.accents:
        for variant in options.variants:
            speaker = f"{accent}_{variant}"
            items = [("digit", d, i) for r in range(options.digit_repeats) for i, d in enumerate(options.digits)]
            items += [("word", w, -1) for w in options.words]
            chosen = rng.choice(len(options.sentences), size=options.sentences_per_speaker, replace=False)
            items += [("sentence", options.sentences[i], -1) for i in sorted(chosen)]
            counts: dict[str, int] = {}
            for kind, text, label in items:
                counts[kind] = counts.get(kind, 0) + 1
                plan.append(dict(
                    id=f"{options.split_of(variant)}/{speaker}/{kind}_{counts[kind]:03d}",
                    split=options.split_of(variant), speaker=speaker, accent=accent, variant=variant,
                    kind=kind, text=text, label=label,
                    rate=int(rng.integers(options.rate[0], options.rate[1] + 1)),
                    pitch=int(rng.integers(options.pitch[0], options.pitch[1] + 1)),
                    intonation=int(rng.integers(options.intonation[0], options.intonation[1] + 1)),
                    pad=(int(rng.integers(options.pad_ms[0], options.pad_ms[1] + 1)),
                         int(rng.integers(options.pad_ms[0], options.pad_ms[1] + 1))),
                    noise_seed=int(rng.integers(2**31)),
                ))
    return plan


def build_corpus(out_dir: str | Path, options: CorpusOptions | None = None, overwrite: bool = False,
                 verify: bool = True, progress=None) -> SpeechCorpus:
    """Synthesize the corpus into ``out_dir`` once, or reuse it.

    If ``out_dir`` holds a corpus built with the same options it is loaded
    (and verified) instead of rebuilt; other options are an error unless
    ``overwrite``. The corpus is written into a temporary sibling folder that
    is renamed to ``out_dir`` only when complete, so an interrupted build
    leaves nothing that looks finished. ``progress(done, total)`` is called
    after each speaker.
    """
    from scipy.signal import resample_poly

    from eprop_lava.tasks.speech.espeak import ESpeak

    options = options or CorpusOptions()
    out = Path(out_dir)
    if (out / MANIFEST).is_file():
        existing = load_corpus(out, verify=False)
        if existing.options == options.to_dict() and not overwrite:
            return load_corpus(out, verify=verify)
        if not overwrite:
            raise CorpusError(f"{out}: holds a corpus built with other options; "
                              "pass overwrite=True (--overwrite) or choose another folder")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CorpusError(f"{out}: exists and is not an empty folder or a speech corpus; refusing to write there")

    engine = ESpeak.instance()
    plan = _plan(options)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    entries, unmapped, seconds = [], {}, 0.0
    speakers = sorted({p["speaker"] for p in plan})
    done_speakers: set = set()
    try:
        for item in plan:
            voice = f"{item['accent']}+{item['variant']}"
            syn = engine.synthesize(item["text"], voice, item["rate"], item["pitch"], item["intonation"])
            if syn.samples.size == 0 or not syn.phonemes:
                raise CorpusError(f"eSpeak NG produced no audio for {item['text']!r} with {voice}")
            pad0 = _to_rate(item["pad"][0], syn.sample_rate / 1000)
            pad1 = _to_rate(item["pad"][1], syn.sample_rate / 1000)
            native = np.concatenate([np.zeros(pad0), syn.samples / 32768.0, np.zeros(pad1)])
            segs, onsets = _segments(syn, pad0, native.size)
            # 22050 -> 16000 Hz: a rational polyphase resampler (320/441); labels scale by the same ratio
            g = np.gcd(SAMPLE_RATE, syn.sample_rate)
            audio = resample_poly(native, SAMPLE_RATE // g, syn.sample_rate // g)
            ratio = SAMPLE_RATE / syn.sample_rate
            noise = np.random.default_rng(item["noise_seed"]).standard_normal(audio.size) * options.noise
            pcm = np.clip(np.round((audio + noise) * 32767), -32768, 32767).astype(np.int16)
            n = pcm.size
            raw = [(_to_rate(a, ratio), min(_to_rate(b, ratio), n), p) for a, b, p in segs]
            raw = [s for s in raw if s[1] > s[0]]
            raw[-1] = (raw[-1][0], n, raw[-1][2])
            phn = []
            for a, b, p in raw:
                try:
                    lab = espeak_to_39(p)
                except KeyError:
                    unmapped[p] = unmapped.get(p, 0) + 1
                    lab = None
                lab = "q" if lab is None else lab
                if phn and phn[-1][2] == lab == "sil":
                    phn[-1] = (phn[-1][0], b, lab)   # merge adjacent pauses
                else:
                    phn.append((a, b, lab))
            phn[-1] = (phn[-1][0], n, phn[-1][2])
            # words: onset of each word event to the next one (the last ends with its last phone)
            speech_end = max((b for a, b, p in phn if p != "sil"), default=n)
            text_bytes = item["text"]
            words = []
            # word events fire a little before the word's first phoneme: snap to the next phone boundary
            bounds = np.array([a for a, b, p in phn] + [n])
            snap = lambda x: int(bounds[min(np.searchsorted(bounds, x), bounds.size - 1)])
            for k, (s, pos, length) in enumerate(syn.words):
                start = snap(_to_rate(pad0 + s, ratio))
                end = snap(_to_rate(pad0 + syn.words[k + 1][0], ratio)) if k + 1 < len(syn.words) else speech_end
                word = text_bytes[pos - 1:pos - 1 + length].strip(" .,;:!?").lower() or "?"
                if end > start:
                    words.append((start, end, word))
            base = tmp / item["id"]
            base.parent.mkdir(parents=True, exist_ok=True)
            files = {
                "wav": _wav_bytes(pcm),
                "phn": "".join(f"{a} {b} {p}\n" for a, b, p in phn).encode(),
                "wrd": "".join(f"{a} {b} {w}\n" for a, b, w in words).encode(),
                "esp": "".join(f"{a} {b} {p}\n" for a, b, p in raw).encode(),
            }
            digests = {}
            for ext, data in files.items():
                _write_atomic(base.with_name(base.name + "." + ext), data)
                digests[ext] = hashlib.sha256(data).hexdigest()
            entry = {k: item[k] for k in ("id", "split", "speaker", "accent", "variant", "kind", "text", "label",
                                          "rate", "pitch", "intonation")}
            entry.update(n_samples=int(n), files=digests)
            entries.append(entry)
            seconds += n / SAMPLE_RATE
            if progress is not None and item["speaker"] not in done_speakers:
                done_speakers.add(item["speaker"])
                progress(len(done_speakers), len(speakers))
        manifest = {
            "format": FORMAT, "version": VERSION, "sample_rate": SAMPLE_RATE,
            "espeak_version": engine.version, "phones": list(CORPUS_PHONES),
            "options": options.to_dict(),
            "splits": {s: sorted({e["speaker"] for e in entries if e["split"] == s}) for s in SPLITS},
            "n_utterances": len(entries), "seconds": round(seconds, 3),
            "build_seconds": round(time.perf_counter() - started, 3),
            "unmapped_phonemes": unmapped,
            "utterances": entries,
        }
        _write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash) if out.is_dir() and any(out.iterdir()) else (out.rmdir() if out.is_dir() else out.unlink())
            os.replace(tmp, out)
            if trash.exists():
                shutil.rmtree(trash)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_corpus(out, verify=False)


# ---------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    """The options of ``eprop-lava data speech``."""
    parser.add_argument("--out", required=True, help="corpus folder (created; reused if already built)")
    parser.add_argument("--small", action="store_true", help="a few hundred utterances (quick look, tests)")
    parser.add_argument("--accents", help="comma-separated eSpeak accents (default: 8 English accents)")
    parser.add_argument("--variants", help="comma-separated voice variants (default: 24)")
    parser.add_argument("--digit-repeats", type=int, help="times each speaker says each digit (default 2)")
    parser.add_argument("--sentences", type=int, help="sentences per speaker (default 5)")
    parser.add_argument("--seed", type=int, help="seed of the recipe (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if a corpus with other options is there")
    parser.add_argument("--no-verify", action="store_true", help="skip checksum verification when reusing")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def options_from_args(args) -> CorpusOptions:
    changes = {}
    if args.accents:
        changes["accents"] = tuple(a.strip() for a in args.accents.split(",") if a.strip())
    if args.variants:
        changes["variants"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.digit_repeats is not None:
        changes["digit_repeats"] = args.digit_repeats
    if args.sentences is not None:
        changes["sentences_per_speaker"] = args.sentences
    if args.seed is not None:
        changes["seed"] = args.seed
    return CorpusOptions.small(**changes) if args.small else CorpusOptions(**changes)


def run_data_speech(args) -> int:
    """Build (or verify and reuse) the corpus described by parsed arguments."""
    import sys

    options = options_from_args(args)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    started = time.perf_counter()
    corpus = build_corpus(args.out, options, overwrite=args.overwrite, verify=not args.no_verify,
                          progress=None if args.quiet else (lambda d, t: say(f"  speaker {d}/{t}")))
    m = corpus.manifest
    counts = {s: len(corpus.split(s)) for s in SPLITS}
    print(f"{corpus.root}: {m['n_utterances']} utterances, {m['seconds'] / 3600:.2f} h of audio, "
          f"train/valid/test {counts['train']}/{counts['valid']}/{counts['test']} "
          f"(eSpeak NG {m['espeak_version']}, {time.perf_counter() - started:.1f} s)")
    if m.get("unmapped_phonemes"):
        say(f"  phonemes without a 39-set class (labelled q, masked): {m['unmapped_phonemes']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eprop_lava.tasks.speech.corpus --out DIR``: the same as ``eprop-lava data speech``."""
    import argparse

    parser = argparse.ArgumentParser(prog="eprop-lava data speech", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_data_speech(args)
    except UserError as exc:
        print(f"eprop-lava: error: {exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
