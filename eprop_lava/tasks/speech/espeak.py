"""eSpeak NG through ctypes: audio plus phoneme and word timings.

The ``espeakng-loader`` wheel bundles ``libespeak-ng`` (1.52) and its data,
so no system package is needed (docs/speech.md). The library is
initialised in synchronous mode with phoneme events
(``espeakINITIALIZE_PHONEME_EVENTS``); the synthesis callback receives PCM
chunks and a list of events, whose ``sample`` field is the onset, in samples
from the start of the utterance, of each phoneme (type 7) and word (type 1).

eSpeak NG is GPL-3+: it is called at run time as a data-generation tool and
not vendored. Its output is not bit-reproducible (noise excitation differs
between runs and onsets after the first word jitter by a few samples), which
is why :mod:`eprop_lava.tasks.speech.corpus` synthesizes once and records
checksums. The library keeps global state, so one process-wide instance is
used and calls are serialised with a lock.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eprop_lava.errors import UserError

# speak_lib.h constants (copied so that no header is needed)
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_END, EVENT_PHONEME = 0, 1, 5, 7
RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4


class ESpeakError(UserError, RuntimeError):
    """eSpeak NG is missing or refused a request (an unknown voice or accent,
    an out-of-range parameter): the user's to fix, so a one-line error."""


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _Id),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Synthesis:
    """One synthesized utterance at the voice's native rate.

    phonemes: [(onset_sample, mnemonic)] in order (stress marks kept);
    words: [(onset_sample, text_position, length)] (text positions 1-based).
    """

    samples: np.ndarray
    sample_rate: int
    phonemes: list[tuple[int, str]]
    words: list[tuple[int, int, int]]


def available() -> bool:
    """Whether the espeakng-loader wheel (and so eSpeak NG) can be imported."""
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        return False
    return True


class ESpeak:
    """The process-wide eSpeak NG instance; get it with :meth:`instance`."""

    _instance: "ESpeak | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise ESpeakError("eSpeak NG is needed to build the offline speech corpus: "
                              "pip install espeakng-loader (or eprop-lava[speech])") from None
        self.library_path = Path(espeakng_loader.get_library_path())
        self.data_path = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(str(self.library_path))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_ng_GetSampleRate.restype = ctypes.c_int
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(),
                                     INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise ESpeakError(f"espeak_Initialize failed (data at {self.data_path})")
        self._lib = lib
        self._pcm: list[np.ndarray] = []
        self._events: list[tuple] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.version = lib.espeak_Info(None).decode()

    @classmethod
    def instance(cls) -> "ESpeak":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, n, events) -> int:
        if wav and n > 0:
            self._pcm.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == EVENT_PHONEME:
                self._events.append(("phoneme", ev.sample, ev.id.string.decode("utf-8", "replace")))
            elif ev.type == EVENT_WORD:
                self._events.append(("word", ev.sample, ev.text_position, ev.length))
            i += 1
        return 0

    def variants(self) -> list[str]:
        """Voice variant names shipped with the data (``<voice>+<variant>``)."""
        folder = self.data_path / "voices" / "!v"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def synthesize(self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> Synthesis:
        """Speak ``text`` with ``voice`` (e.g. ``en-us+f3``); rate in words per
        minute (80-450), pitch and pitch_range 0-100."""
        with self._lock:
            lib = self._lib
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                # e.g. "en-gb+m7" fails where "en+m7" works (docs/speech.md, voice names)
                raise ESpeakError(f"eSpeak NG has no voice {voice!r}")
            for param, value, name in ((RATE, rate, "rate"), (PITCH, pitch, "pitch"), (RANGE, pitch_range, "pitch_range")):
                if lib.espeak_SetParameter(param, int(value), 0) != 0:
                    raise ESpeakError(f"eSpeak NG refused {name}={value}")
            self._pcm, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            if lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None) != 0:
                raise ESpeakError(f"espeak_Synth failed for {text!r} with {voice!r}")
            lib.espeak_Synchronize()
            sr = lib.espeak_ng_GetSampleRate()  # mbrola voices differ from the initial rate
            samples = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
            phonemes = [(e[1], e[2]) for e in self._events if e[0] == "phoneme"]
            words = [(e[1], e[2], e[3]) for e in self._events if e[0] == "word"]
        return Synthesis(samples.astype(np.int16), int(sr), phonemes, words)
