"""Phone sets: TIMIT's 61 phones, the standard 39-phone folding, and a map
from eSpeak NG phoneme mnemonics to that 39-phone set.

The folding is Lee & Hon (1989), "Speaker-independent phone recognition
using hidden Markov models" (IEEE TASSP 37(11)), as used by Graves &
Schmidhuber (2005) and the Kaldi/ESPnet TIMIT recipes: closures, pauses and
epenthetic silence become ``sil``; ``q`` (glottal stop) is deleted, which for
frame-wise classification means its frames carry no target (masked).

eSpeak NG (https://github.com/espeak-ng/espeak-ng) names phonemes with Kirshenbaum-like
mnemonics (``s 'E v @ n``). Version 1.52 (the espeakng-loader wheel) puts the
stress marks ``'`` and ``,`` into the name, 1.51 does not, so names are
normalised before lookup. The map targets the 39-phone set so that models
trained on the offline corpus share their output layer with TIMIT-39.
"""

from __future__ import annotations

import re

# The 61 phones of the TIMIT transcriptions (TIMIT doc/phoncode.doc), sorted.
TIMIT61: tuple[str, ...] = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ax-h", "axr", "ay", "b", "bcl", "ch", "d", "dcl", "dh",
    "dx", "eh", "el", "em", "en", "eng", "epi", "er", "ey", "f", "g", "gcl", "h#", "hh", "hv",
    "ih", "ix", "iy", "jh", "k", "kcl", "l", "m", "n", "ng", "nx", "ow", "oy", "p", "pau", "pcl",
    "q", "r", "s", "sh", "t", "tcl", "th", "uh", "uw", "ux", "v", "w", "y", "z", "zh",
)

# Lee & Hon (1989) folding: phones not listed map to themselves; q is deleted (None).
_FOLD: dict[str, str | None] = {
    "ao": "aa",
    "ax": "ah", "ax-h": "ah",
    "axr": "er",
    "hv": "hh",
    "ix": "ih",
    "el": "l",
    "em": "m",
    "en": "n", "nx": "n",
    "eng": "ng",
    "zh": "sh",
    "ux": "uw",
    "pcl": "sil", "tcl": "sil", "kcl": "sil", "bcl": "sil", "dcl": "sil", "gcl": "sil",
    "h#": "sil", "pau": "sil", "epi": "sil",
    "q": None,
}
FOLD_61_TO_39: dict[str, str | None] = {p: _FOLD.get(p, p) for p in TIMIT61}

# The 39 folded classes, sorted (index = class id in a 39-way readout).
TIMIT39: tuple[str, ...] = tuple(sorted({p for p in FOLD_61_TO_39.values() if p is not None}))

# Core test set: 2 male + 1 female speaker per dialect region DR1..DR8 (seed 002
# sec. 3.1.2; TIMIT doc/testset.doc). 24 speakers x 8 SI/SX sentences = 192.
CORE_TEST_SPEAKERS: dict[str, tuple[str, ...]] = {
    "dr1": ("mdab0", "mwbt0", "felc0"),
    "dr2": ("mtas1", "mwew0", "fpas0"),
    "dr3": ("mjmp0", "mlnt0", "fpkt0"),
    "dr4": ("mlll0", "mtls0", "fjlm0"),
    "dr5": ("mbpm0", "mklt0", "fnlp0"),
    "dr6": ("mcmj0", "mjdh0", "fmgd0"),
    "dr7": ("mgrt0", "mnjm0", "fdhc0"),
    "dr8": ("mjln0", "mpam0", "fmld0"),
}

# The standard 50-speaker development set drawn from TEST minus the core test
# set (Halberstadt 1998; the Kaldi/ESPnet TIMIT recipes' conf/dev_spk.list):
# 50 x 8 = 400 sentences, the 400 validation sentences of seed 002 sec. 3.1.2.
DEV_SPEAKERS: tuple[str, ...] = (
    "faks0", "fdac1", "fjem0", "mgwt0", "mjar0", "mmdb1", "mmdm2", "mpdf0", "fcmh0", "fkms0",
    "mbdg0", "mbwm0", "mcsh0", "fadg0", "fdms0", "fedw0", "mgjf0", "mglb0", "mrtk0", "mtaa0",
    "mtdt0", "mthc0", "mwjg0", "fnmr0", "frew0", "fsem0", "mbns0", "mmjr0", "mdls0", "mdlf0",
    "mdvc0", "mers0", "fmah0", "fdrw0", "mrcs0", "mrjm4", "fcal1", "mmwh0", "fjsj0", "majc0",
    "mjsw0", "mreb0", "fgjd0", "fjmg0", "mroa0", "mteb0", "mjfc0", "mrjr0", "fmml0", "mrws1",
)

PHONE_SETS = ("39", "61")


def phone_set(name: str) -> tuple[str, ...]:
    """The class list of a phone set: "39" (folded) or "61" (TIMIT)."""
    if name == "39":
        return TIMIT39
    if name == "61":
        return TIMIT61
    raise ValueError(f"phone_set: unknown phone set {name!r}; choose one of {', '.join(PHONE_SETS)}")


def fold(phone: str) -> str | None:
    """TIMIT-61 phone -> 39-phone class (None for the deleted q). Accepts any case."""
    p = phone.lower()
    if p in FOLD_61_TO_39:
        return FOLD_61_TO_39[p]
    if p in TIMIT39:  # already folded (e.g. the offline corpus' 'sil')
        return p
    raise KeyError(f"{phone!r} is not a TIMIT phone")


# ---------------------------------------------------------------- eSpeak NG
# eSpeak NG English mnemonics (espeak-ng/phsource/ph_english*, espeak-ng/docs/phonemes.md at
# github.com/espeak-ng/espeak-ng) -> 39-set.
# Vowels are mapped by their nucleus as TIMIT transcribers would label the
# frames: r-coloured nuclei (A@, o@, O@, e@, i@, U@) to the vowel, because
# eSpeak emits the following /r/ as its own phoneme in rhotic accents.
ESPEAK_TO_39: dict[str, str | None] = {
    # consonants
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "g",
    "f": "f", "v": "v", "T": "th", "D": "dh", "s": "s", "z": "z", "S": "sh", "Z": "sh",
    "h": "hh", "x": "hh", "C": "hh",
    "m": "m", "n": "n", "N": "ng", "l": "l", "r": "r", "w": "w", "j": "y",
    "tS": "ch", "dZ": "jh",
    "t#": "dx", "d#": "dx", "*": "dx",          # flaps (en-us "water")
    "t2": "t", "d2": "d", "t[": "t", "d[": "d", "n[": "n", "r-": "r", "l/": "l", "l/2": "l", "z/": "z", "z/2": "z",
    "n-": "n", "m-": "m", "l-": "l", "@L": "l",  # syllabic consonants (TIMIT en/em/el fold the same way)
    "?": None,                                   # glottal stop = TIMIT q, deleted by the folding
    "hw": "w", "W": "w",
    # vowels
    "a": "ae", "a#": "ae", "aa": "ae", "A": "aa", "A:": "aa", "A@": "aa", "0": "aa", "O": "aa",
    "O:": "aa", "O2": "aa", "O@": "aa", "o@": "aa", "Q": "aa",
    "E": "eh", "e": "eh", "e@": "eh", "E2": "eh",
    "I": "ih", "I2": "ih", "I#": "ih", "i": "iy", "i:": "iy", "i@": "iy", "i@3": "iy", "IR": "ih",
    "U": "uh", "U@": "uh", "u": "uw", "u:": "uw", "u@": "uw",
    "V": "ah", "@": "ah", "@2": "ah", "@5": "ah", "@-": "ah", "a2": "ah", "VR": "ah",
    "3": "er", "3:": "er", "@r": "er", "A@r": "aa",
    "aI": "ay", "aI@": "ay", "aI3": "ay", "aU": "aw", "aU@": "aw", "eI": "ey", "oU": "ow", "o": "ow",
    "OI": "oy", "o:": "ow",
    # pauses
    "_": "sil", "_:": "sil", "_!": "sil", "_^_": "sil", "": "sil",
}

_STRESS = re.compile(r"[',%=]")
_SUFFIX = re.compile(r"[0-9#/\-;]+$")


def normalize_espeak(name: str) -> str:
    """Strip the stress marks that eSpeak NG 1.52 puts into phoneme names ('E -> E)."""
    return _STRESS.sub("", name.strip())


def espeak_to_39(name: str) -> str | None:
    """Map one eSpeak NG phoneme mnemonic to the 39-phone set.

    Returns None for phonemes with no counterpart (the glottal stop; TIMIT
    deletes q). Unknown variants fall back to their base symbol (``t2`` ->
    ``t``, ``I#`` -> ``I``); a mnemonic that still has no entry raises
    KeyError so that a new eSpeak release cannot silently mislabel frames.
    """
    p = normalize_espeak(name)
    if p in ESPEAK_TO_39:
        return ESPEAK_TO_39[p]
    base = _SUFFIX.sub("", p)
    if base in ESPEAK_TO_39:
        return ESPEAK_TO_39[base]
    raise KeyError(f"eSpeak phoneme {name!r} has no entry in ESPEAK_TO_39")
