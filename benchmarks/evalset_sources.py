"""Speech and music for the independent evaluation set (`make_eval_set.py`): texts, synthesizers, recordings.

Nothing here comes from ../shared/audio (the set the VAD defaults and skipped-speech rules were tuned
on). Everything comes from Debian packages:

- texts: `fortunes` / `fortunes-min` (quotations and prose; only those a synthesizer reads as
  written: letters and plain punctuation, no digits, acronyms or abbreviations, every word in
  `wamerican`/`wbritish`), and `bible-kjv` (the King James text, read with `bible -f`);
- synthesizers: `espeak-ng` (its own voices and variants, and the MBROLA voices `mbrola-us1/2/3`,
  `mbrola-en1`, from contrib/non-free), `flite` (kal, awb, rms, slt), `festival` with
  `festvox-kallpc16k`, `festvox-kdlpc16k`, `festvox-us-slt-hts`, `festvox-en1`;
- real human speech: `asterisk-core-sounds-en-wav` (Allison Smith's IVR prompts, 8 kHz, CC BY-SA 3.0;
  the prompt texts from `asterisk-core-sounds-en`'s core-sounds-en.txt) and `alsa-utils`' channel
  names (/usr/share/sounds/alsa);
- real music: `asterisk-moh-opsound-wav` (Opsound tracks, 8 kHz, CC BY-SA 3.0).

Audio comes back as float32 mono at 16 kHz (`SR`), converted with sox.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SR = 16000
FORTUNES = Path("/usr/share/games/fortunes")
# Categories read; men-women and the offensive files are left out.
FORTUNE_FILES = ("literature", "wisdom", "people", "humorists", "love", "education", "science", "work",
                 "food", "pets", "politics", "platitudes", "miscellaneous", "fortunes", "kids", "sports",
                 "art", "medicine", "law", "news")
DICTIONARIES = (Path("/usr/share/dict/american-english"), Path("/usr/share/dict/british-english"))
ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ALLISON_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
MOH = Path("/usr/share/asterisk/moh")
APT_PACKAGES = ("sox espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes "
                "fortunes-min bible-kjv wamerican wbritish alsa-utils asterisk-core-sounds-en "
                "asterisk-core-sounds-en-wav asterisk-moh-opsound-wav ffmpeg; from contrib/non-free: "
                "mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 festvox-en1")


class SourceMissing(RuntimeError):
    """A tool or a Debian package the set needs is not installed."""


def need(path_or_tool: str | Path) -> None:
    ok = Path(path_or_tool).exists() if "/" in str(path_or_tool) else shutil.which(str(path_or_tool))
    if not ok:
        raise SourceMissing(f"{path_or_tool} is missing; the set needs these Debian packages: {APT_PACKAGES}")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    need(cmd[0])
    proc = subprocess.run(cmd, capture_output=True, **kw)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])}...: {proc.stderr.decode(errors='replace')[-400:]}")
    return proc


def load(path: Path | str) -> np.ndarray:
    """Any file sox reads, as float32 mono at SR (channels averaged, high-quality resampling)."""
    proc = _run(["sox", "-D", str(path), "-t", "f32", "-c", "1", "-r", str(SR), "-"])
    return np.frombuffer(proc.stdout, dtype="<f4").copy()


# --------------------------------------------------------------------------- texts

_PLAIN = re.compile(r"^[A-Za-z ,.;:?!'\"-]+$")
_ABBREVIATION = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|Co|Inc|Ltd|Prof|Gen|Col|Capt|Lt|Sgt|Rev|Mt|No)\."
                           r"|\b[A-Za-z]\.[A-Za-z]\.")
_WORD = re.compile(r"[A-Za-z']+")


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    words = set()
    for path in DICTIONARIES:
        need(path)
        words |= {w.strip().lower() for w in path.read_text(encoding="utf-8", errors="ignore").splitlines()}
    return frozenset(words)


def _known(token: str) -> bool:
    t = token.lower().strip("'")
    return t in _dictionary() or t.removesuffix("'s") in _dictionary()


@dataclass(frozen=True)
class Text:
    text: str
    source: str  # where it came from, e.g. "fortunes/wisdom #327"

    @property
    def words(self) -> int:
        return len(_WORD.findall(self.text))


def _fortune_text(chunk: str) -> str | None:
    """One fortune as a single line a synthesizer reads as written, or None."""
    lines = chunk.strip("\n").split("\n")
    while lines and re.match(r"^\s*(--|\u2014|-\s)", lines[-1]):  # attribution
        lines.pop()
    if not lines or any(re.match(r"^\s*[A-Za-z ]{1,20}:", line) for line in lines):  # dialogue, headings
        return None
    text = re.sub(r"\s+", " ", " ".join(line.strip() for line in lines)).strip()
    tokens = _WORD.findall(text)
    if (not _PLAIN.match(text) or _ABBREVIATION.search(text) or "--" in text or text.count('"') % 2
            or not 12 <= len(tokens) <= 90 or any(t.isupper() and len(t) > 1 for t in tokens)):
        return None
    return text if all(_known(t) for t in tokens) else None


@lru_cache(maxsize=1)
def fortune_texts() -> tuple[Text, ...]:
    """Every usable fortune (about 3,000), in file order."""
    out = []
    for name in FORTUNE_FILES:
        path = FORTUNES / name
        need(path)
        for k, chunk in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n%\n")):
            text = _fortune_text(chunk)
            if text:
                out.append(Text(text, f"fortunes/{name} #{k}"))
    return tuple(out)


def bible(reference: str) -> Text:
    """A King James passage ("Luke 15:11-32") as one line; "LORD" read as "Lord", verse numbers dropped."""
    proc = _run(["bible", "-f", reference])
    verses = []
    for line in proc.stdout.decode().splitlines():
        m = re.match(r"^\S+\d+:\d+\s+(.*)$", line)
        if m:
            verses.append(m.group(1).strip())
        elif line.strip() and verses:
            verses[-1] += " " + line.strip()
    if not verses:
        raise RuntimeError(f"bible -f {reference!r}: no verses")
    text = re.sub(r"\bLORD\b", "Lord", " ".join(verses))
    return Text(re.sub(r"\s+", " ", text), f"bible-kjv {reference}")


@lru_cache(maxsize=1)
def allison_prompts() -> tuple[tuple[str, str], ...]:
    """(prompt name, text) of Allison Smith's recorded prompts with at least 6 words of plain text."""
    need(ALLISON_TEXT)
    out = []
    for line in gzip.open(ALLISON_TEXT, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(": ")
        text = text.strip()
        if (not sep or name.startswith(";") or "/" in name or "[" in text or "(" in text
                or not (ALLISON / f"{name}.wav").is_file()):
            continue
        for wrong, right in ALLISON_SPELLING.items():
            text = text.replace(wrong, right)
        if (len(_WORD.findall(text)) >= 6 and re.match(r"^[A-Za-z0-9 ,.;:?!'-]+$", text) and "..." not in text
                and not re.search(r"\d\d|\w\.\w", text)):  # no numbers read digit by digit, no web addresses
            out.append((name, re.sub(r"\s+", " ", text)))
    return tuple(out)


# Misspellings in core-sounds-en.txt (the spelling only: the words are the ones spoken).
ALLISON_SPELLING = {"umute": "unmute", "Un-indentified": "Unidentified", "witheld": "withheld",
                    "represenatives": "representatives", "mail box": "mailbox"}

ALSA_NAMES = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right",
              "Side_Left", "Side_Right")


# --------------------------------------------------------------------------- synthesizers

@dataclass(frozen=True)
class Voice:
    """A synthesizer and its voice: engine "espeak" (espeak-ng, MBROLA voices too: "mb-us1"), "flite",
    "festival"; rate: words per minute for espeak-ng, a duration stretch (1.0 = normal) otherwise."""

    engine: str
    name: str
    rate: float

    def describe(self) -> str:
        if self.engine == "espeak":
            kind = "espeak-ng MBROLA" if self.name.startswith("mb-") else "espeak-ng"
            return f"{kind} voice {self.name}, {self.rate:.0f} wpm"
        return f"{self.engine} voice {self.name}, duration stretch {self.rate:.2f}"


def synthesize(voice: Voice, text: str) -> np.ndarray:
    """The text spoken by the voice, float32 mono at SR, leading and trailing silence trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        wav, txt = Path(tmp) / "out.wav", Path(tmp) / "in.txt"
        txt.write_text(text + "\n", encoding="utf-8")
        if voice.engine == "espeak":
            if voice.name.startswith("mb-"):
                need("mbrola")
            _run(["espeak-ng", "-v", voice.name, "-s", str(int(voice.rate)), "-f", str(txt), "-w", str(wav)])
        elif voice.engine == "flite":
            _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.rate}", "-f", str(txt),
                  "-o", str(wav)])
        elif voice.engine == "festival":
            setup = f"(begin (voice_{voice.name}) (Parameter.set 'Duration_Stretch {voice.rate}))"
            _run(["text2wave", "-eval", setup, str(txt), "-o", str(wav)])
        else:
            raise ValueError(f"unknown synthesizer {voice.engine!r}")
        return trim(load(wav))


def trim(audio: np.ndarray, floor_db: float = -50.0) -> np.ndarray:
    """Drop leading and trailing samples quieter than floor_db below the peak (10 ms frames)."""
    frame = SR // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / (rms.max() + 1e-12)) > floor_db)[0]
    if len(loud) == 0:
        return audio
    return audio[max(loud[0] - 2, 0) * frame: min(loud[-1] + 3, n) * frame]


def recording(path: Path) -> np.ndarray:
    need(path)
    return trim(load(path))


def music_track(name: str) -> np.ndarray:
    """One Opsound track from asterisk-moh-opsound-wav, at SR (its 8 kHz band)."""
    return load(MOH / f"{name}.wav") if (MOH / f"{name}.wav").is_file() else need(MOH / f"{name}.wav")
