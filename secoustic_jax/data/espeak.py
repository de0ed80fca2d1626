"""espeak-ng synthesis with per-phoneme timing through the C API (data.md §5.4).

The command line cannot give timings; the library's synth callback receives phoneme
events (type 7) whose `sample` is the phoneme's start sample at 22 050 Hz. One library
instance per process (global state in libespeak-ng), initialised lazily.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

_EVENT_END, _EVENT_PHONEME = 0, 7
_AUDIO_SYNCHRONOUS = 2
_PHONEME_EVENTS, _PHONEME_IPA = 0x1, 0x2
_RATE, _PITCH = 1, 3
_CHARS_UTF8 = 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    """The espeak-ng library is missing or a call failed."""


class Espeak:
    """A loaded libespeak-ng with IPA phoneme events. Use `instance()` (one per process)."""

    _singleton: "Espeak | None" = None

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as e:
            raise EspeakError(f"cannot load {name}: install espeak-ng (make install)") from e
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_SYNCHRONOUS, 0, None,
                                                      _PHONEME_EVENTS | _PHONEME_IPA)
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({self.sample_rate})")
        self._audio: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._cb = _CALLBACK(self._on_synth)  # keep a reference while synthesising (trap)
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]

    @classmethod
    def instance(cls) -> "Espeak":
        if cls._singleton is None:
            cls._singleton = cls()
        return cls._singleton

    def _on_synth(self, wav, n, events) -> int:
        if n > 0:
            self._audio.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EVENT_END:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((ev.id.string.decode("utf-8", "replace"), int(ev.sample)))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate_wpm: int = 175, pitch: int = 50
              ) -> tuple[np.ndarray, list[str], list[int]]:
        """Returns (float32 audio [N] at 22 050 Hz, phoneme labels, start samples)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"unknown espeak-ng voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, int(rate_wpm), 0)
        self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        self._audio, self._events = [], []
        data = text.encode("utf-8")
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != 0 or not self._audio:
            raise EspeakError(f"espeak_Synth failed for voice {voice!r} (code {err})")
        audio = np.concatenate(self._audio).astype(np.float32) / 32768.0
        labels = [lab for lab, _ in self._events]
        starts = [s for _, s in self._events]
        return audio, labels, starts
