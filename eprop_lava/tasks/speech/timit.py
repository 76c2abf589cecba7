"""A reader for the TIMIT corpus (seed 002 secs. 3.1.1-3.1.2).

TIMIT is licensed (LDC93S1) and cannot be shipped; users point this reader at
their copy. The standard layout, in any letter case::

    <root>/TRAIN/DR1/FCJF0/SA1.WAV  SA1.PHN  SA1.WRD  SA1.TXT
    <root>/TEST/DR1/MDAB0/SI1039.WAV ...

``<root>`` may also be a folder that holds the corpus one or two levels down
(``timit/TIMIT/TRAIN``, ``data/TRAIN``). The .WAV files are NIST SPHERE
(1024-byte text header, 16-bit PCM at 16 kHz); some redistributions converted
them to RIFF WAV under the same name, and both are read.

Splits (sec. 3.1.2): the SA dialect sentences are excluded everywhere (every
speaker reads the same two); ``train`` is TRAIN's 462 speakers x 8 = 3696
sentences; ``valid`` is the standard 50-speaker development set from TEST
(400 sentences); ``test`` is the core test set, 24 speakers x 8 = 192.
``validation="random"`` instead draws 400 sentences at random (seeded) from the
TEST sentences outside the core set, as the seed's wording allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eprop_lava.errors import UserError
from eprop_lava.tasks.speech.phones import CORE_TEST_SPEAKERS, DEV_SPEAKERS, TIMIT61

SPHERE_MAGIC = b"NIST_1A"
EXPECTED = {"train": 3696, "valid": 400, "test": 192}
SPLITS = ("train", "valid", "test")
VALIDATIONS = ("dev", "random")
CORE_SPEAKERS = frozenset(s for group in CORE_TEST_SPEAKERS.values() for s in group)


class TimitError(UserError, ValueError):
    """The corpus is missing, partial or malformed; the message names the file."""


# ------------------------------------------------------------------- SPHERE
def parse_sphere_header(data: bytes, path: str | Path = "<bytes>") -> dict:
    """Parse a NIST SPHERE header into {field: value} (ints for -i, floats for -r).

    The header is ``NIST_1A\\n<size>\\n`` followed by ``name -type value``
    lines up to ``end_head``; ``<size>`` (1024 in TIMIT) is where samples start.
    """
    if not data.startswith(SPHERE_MAGIC):
        raise TimitError(f"{path}: not a NIST SPHERE file (no {SPHERE_MAGIC.decode()} magic)")
    lines = data.split(b"\n")
    try:
        header_size = int(lines[1].strip())
    except (IndexError, ValueError):
        raise TimitError(f"{path}: SPHERE header size line is missing or not a number") from None
    if len(data) < header_size:
        raise TimitError(f"{path}: truncated SPHERE header ({len(data)} of {header_size} bytes)")
    fields: dict = {"header_size": header_size}
    text = data[:header_size].decode("ascii", errors="replace").split("\n")[2:]
    for line in text:
        line = line.strip()
        if line == "end_head":
            return fields
        if not line or line.startswith(";"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise TimitError(f"{path}: malformed SPHERE header line {line!r}")
        name, kind, value = parts
        if kind == "-i":
            fields[name] = int(value)
        elif kind == "-r":
            fields[name] = float(value)
        elif kind.startswith("-s"):
            fields[name] = value[: int(kind[2:])] if kind[2:].isdigit() else value
        else:
            raise TimitError(f"{path}: unknown SPHERE field type {kind!r} in {line!r}")
    raise TimitError(f"{path}: SPHERE header has no end_head within {header_size} bytes")


def read_sphere(path: str | Path) -> tuple[np.ndarray, int, dict]:
    """Samples (int16, 1-D), sample rate and header of a SPHERE (or RIFF) .WAV.

    Handles uncompressed 16-bit PCM of either byte order, one channel. A
    shorten-compressed file (the original CD-ROM's ``sample_coding
    pcm,embedded-shorten-...``) raises TimitError telling the user to
    decompress it (e.g. ``sph2pipe -f wav``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TimitError(f"{path}: cannot read ({exc.strerror})") from None
    if data.startswith(b"RIFF"):
        return _read_riff(path)
    h = parse_sphere_header(data[:4096] if len(data) > 4096 else data, path)
    coding = str(h.get("sample_coding", "pcm")).lower()
    if "shorten" in coding or "wavpack" in coding or "ulaw" in coding or "alaw" in coding:
        raise TimitError(f"{path}: SPHERE sample_coding {coding!r} is compressed or non-linear; "
                         "convert it to 16-bit PCM first (e.g. `sph2pipe -f wav`)")
    if h.get("channel_count", 1) != 1:
        raise TimitError(f"{path}: expected 1 channel, header says {h['channel_count']}")
    width = h.get("sample_n_bytes", 2)
    if width != 2:
        raise TimitError(f"{path}: expected 2-byte samples, header says sample_n_bytes={width}")
    order = str(h.get("sample_byte_format", "01"))
    if order not in ("01", "10"):
        raise TimitError(f"{path}: unsupported sample_byte_format {order!r}")
    if "sample_rate" not in h:
        raise TimitError(f"{path}: SPHERE header has no sample_rate")
    body = data[h["header_size"]:]
    n = h.get("sample_count", len(body) // 2)
    if len(body) < 2 * n:
        raise TimitError(f"{path}: truncated audio ({len(body) // 2} of {n} samples in the header's sample_count)")
    samples = np.frombuffer(body[: 2 * n], dtype="<i2" if order == "01" else ">i2").astype(np.int16)
    return samples, int(h["sample_rate"]), h


def _read_riff(path: Path) -> tuple[np.ndarray, int, dict]:
    from scipy.io import wavfile

    try:
        sr, samples = wavfile.read(str(path))
    except ValueError as exc:
        raise TimitError(f"{path}: unreadable RIFF WAV ({exc})") from None
    if samples.ndim != 1 or samples.dtype != np.int16:
        raise TimitError(f"{path}: expected mono 16-bit PCM, got {samples.dtype} with shape {samples.shape}")
    return samples, int(sr), {"format": "riff"}


def write_sphere(path: str | Path, samples: np.ndarray, sample_rate: int = 16000, **extra) -> None:
    """Write mono 16-bit little-endian PCM with a 1024-byte SPHERE header
    (the TIMIT format; used to build test fixtures)."""
    samples = np.asarray(samples, dtype=np.int16)
    lines = ["NIST_1A", "   1024", "database_id -s5 TIMIT", "database_version -s3 1.0"]
    for name, value in extra.items():
        kind = "-i" if isinstance(value, int) else f"-s{len(str(value))}"
        lines.append(f"{name} {kind} {value}")
    lines += [
        "channel_count -i 1",
        f"sample_count -i {samples.size}",
        f"sample_rate -i {int(sample_rate)}",
        f"sample_min -i {int(samples.min()) if samples.size else 0}",
        f"sample_max -i {int(samples.max()) if samples.size else 0}",
        "sample_n_bytes -i 2",
        "sample_byte_format -s2 01",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    header = ("\n".join(lines) + "\n").encode("ascii")
    if len(header) > 1024:
        raise ValueError("SPHERE header longer than 1024 bytes")
    Path(path).write_bytes(header + b" " * (1024 - len(header)) + samples.astype("<i2").tobytes())


# --------------------------------------------------------------- label files
def read_segments(path: str | Path, vocabulary: tuple[str, ...] | None = None) -> list[tuple[int, int, str]]:
    """Read a TIMIT .PHN or .WRD file: lines ``start end label`` (samples).

    Checks that starts and ends are integers with start < end, in order, and
    (for .PHN) that phones do not overlap and each is one of the 61 TIMIT
    phones (TIMIT's .WRD segments may overlap and are not checked for it).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise TimitError(f"{path}: cannot read ({exc.strerror})") from None
    out: list[tuple[int, int, str]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise TimitError(f"{path}:{i}: expected 'start end label', got {line!r}")
        try:
            start, end = int(parts[0]), int(parts[1])
        except ValueError:
            raise TimitError(f"{path}:{i}: start and end must be integer sample indices, got {line!r}") from None
        label = parts[2].lower() if vocabulary is not None else parts[2]
        if start < 0 or end <= start:
            raise TimitError(f"{path}:{i}: empty or negative segment {start}..{end}")
        if out and start < out[-1][0]:
            raise TimitError(f"{path}:{i}: segments out of order (starts at {start} after {out[-1][0]})")
        if vocabulary is not None and out and start < out[-1][1]:  # phones tile the utterance; words may overlap
            raise TimitError(f"{path}:{i}: phone segment {start}..{end} overlaps the previous one "
                             f"({out[-1][0]}..{out[-1][1]})")
        if vocabulary is not None and label not in vocabulary:
            raise TimitError(f"{path}:{i}: unknown phone {parts[2]!r}")
        out.append((start, end, label))
    if not out:
        raise TimitError(f"{path}: no segments")
    return out


# ---------------------------------------------------------------- utterances
@dataclass(frozen=True)
class TimitUtterance:
    """One sentence: ids are lower case (``train``, ``dr1``, ``fcjf0``, ``si648``)."""

    part: str        # "train" or "test": the TIMIT folder it is in
    dialect: str     # "dr1" .. "dr8"
    speaker: str     # e.g. "fcjf0" (first letter: sex)
    sentence: str    # e.g. "si648"
    wav: Path
    phn: Path
    wrd: Path | None = None

    @property
    def id(self) -> str:
        return f"{self.part}/{self.dialect}/{self.speaker}/{self.sentence}"

    @property
    def kind(self) -> str:
        """"sa" (dialect), "sx" (compact) or "si" (diverse), sec. 3.1.1."""
        return self.sentence[:2]

    def load(self) -> tuple[np.ndarray, int, list[tuple[int, int, str]]]:
        """(int16 samples, sample rate, [(start, end, phone61), ...]), checked against each other."""
        samples, sr, _ = read_sphere(self.wav)
        segments = read_segments(self.phn, TIMIT61)
        if segments[-1][1] > samples.size + 1:  # TIMIT's last end may equal the length
            raise TimitError(f"{self.phn}: last segment ends at sample {segments[-1][1]}, "
                             f"but {self.wav.name} has {samples.size} samples")
        return samples, sr, segments


_SENTENCE = re.compile(r"^(s[aix]\d+)\.wav$", re.IGNORECASE)


def _child(parent: Path, name: str) -> Path | None:
    """The entry of ``parent`` named ``name`` in any letter case."""
    for p in parent.iterdir():
        if p.name.lower() == name.lower():
            return p
    return None


def find_root(root: str | Path) -> Path:
    """The folder that holds TRAIN and TEST (any case), at most two levels below ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TimitError(f"{root}: TIMIT root is not a directory")
    frontier = [root]
    for _ in range(3):
        nxt = []
        for d in frontier:
            if _child(d, "train") is not None and _child(d, "test") is not None:
                return d
            nxt += sorted(p for p in d.iterdir() if p.is_dir())
        frontier = nxt
    raise TimitError(f"{root}: no TRAIN and TEST folders found here or two levels below "
                     "(expected the TIMIT layout <root>/TRAIN/DR1/<speaker>/<sentence>.WAV)")


@dataclass
class TimitCorpus:
    """A TIMIT copy on disk, scanned once.

    require_complete: check that the splits have their standard sizes
      (3696 / 400 / 192) and name the missing speakers if not; switch it off
      for subsets.
    validation: "dev" (the 50-speaker development set) or "random" (400
      sentences drawn with ``seed`` from TEST outside the core test set).
    """

    root: str | Path
    require_complete: bool = True
    validation: str = "dev"
    seed: int = 0
    utterances: list[TimitUtterance] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.validation not in VALIDATIONS:
            raise TimitError(f"TimitCorpus.validation: unknown value {self.validation!r}; "
                             f"choose one of {', '.join(VALIDATIONS)}")
        self.root = find_root(self.root)
        self.utterances = self._scan()
        if self.require_complete:
            self.check_complete()

    def _scan(self) -> list[TimitUtterance]:
        out = []
        for part in ("train", "test"):
            part_dir = _child(Path(self.root), part)
            for dr in sorted((p for p in part_dir.iterdir() if p.is_dir()), key=lambda p: p.name.lower()):
                if not re.fullmatch(r"dr[1-8]", dr.name.lower()):
                    raise TimitError(f"{dr}: unexpected folder in {part_dir.name} (expected DR1..DR8)")
                for spk in sorted((p for p in dr.iterdir() if p.is_dir()), key=lambda p: p.name.lower()):
                    files = {p.name.lower(): p for p in spk.iterdir() if p.is_file()}
                    for name in sorted(files):
                        m = _SENTENCE.match(name)
                        if not m:
                            continue
                        sent = m.group(1).lower()
                        phn = files.get(f"{sent}.phn")
                        if phn is None:
                            raise TimitError(f"{files[name]}: no matching {sent.upper()}.PHN next to it")
                        out.append(TimitUtterance(part, dr.name.lower(), spk.name.lower(), sent,
                                                  files[name], phn, files.get(f"{sent}.wrd")))
                    orphans = [files[n] for n in files if n.endswith(".phn") and n[:-4] + ".wav" not in files]
                    if orphans:
                        raise TimitError(f"{orphans[0]}: no matching .WAV next to it")
        if not out:
            raise TimitError(f"{self.root}: no TIMIT sentences (<sentence>.WAV with .PHN) found")
        return out

    # ------------------------------------------------------------ splits
    def split(self, name: str) -> list[TimitUtterance]:
        """The utterances of "train", "valid" or "test" (SA sentences excluded)."""
        no_sa = [u for u in self.utterances if u.kind != "sa"]
        if name == "train":
            return [u for u in no_sa if u.part == "train"]
        if name == "test":
            return [u for u in no_sa if u.part == "test" and u.speaker in CORE_SPEAKERS]
        if name == "valid":
            rest = [u for u in no_sa if u.part == "test" and u.speaker not in CORE_SPEAKERS]
            if self.validation == "dev":
                dev = set(DEV_SPEAKERS)
                return [u for u in rest if u.speaker in dev]
            rng = np.random.default_rng(self.seed)
            k = min(EXPECTED["valid"], len(rest))
            return [rest[i] for i in sorted(rng.choice(len(rest), size=k, replace=False))]
        raise TimitError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")

    def check_complete(self) -> None:
        """Raise TimitError naming what is missing when a split lacks sentences."""
        problems = []
        present = {(u.part, u.speaker) for u in self.utterances}
        missing_core = sorted(s for s in CORE_SPEAKERS if ("test", s) not in present)
        if missing_core:
            problems.append(f"core test speakers missing from TEST: {', '.join(missing_core)}")
        if self.validation == "dev":
            missing_dev = sorted(s for s in DEV_SPEAKERS if ("test", s) not in present)
            if missing_dev:
                problems.append(f"development speakers missing from TEST: {', '.join(missing_dev)}")
        for name, n in EXPECTED.items():
            got = len(self.split(name))
            if got != n:
                problems.append(f"{name} has {got} SI/SX sentences, expected {n}")
        if problems:
            raise TimitError(f"{self.root}: incomplete TIMIT corpus: " + "; ".join(problems)
                             + " (pass require_complete=False to use a subset)")
