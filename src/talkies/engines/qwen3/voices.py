"""Qwen3-TTS voice catalogs: reference WAVs on disk (base mode), preset speakers, the design sentinel.

Base-mode voices are `.wav` files under two directories, scanned on every lookup so a file dropped in
(or removed) counts at once, without a restart:

* built-in: TALKIES_QWEN3_VOICES_DIR (default: the starter voices shipped inside the package);
* custom: `$TALKIES_DATA_DIR/custom-voices` (POST /v1/audio/voices writes there).

A voice's name is its path relative to its directory without `.wav` (`clients/acme/jane`); a custom voice
shadows a built-in one of the same name. Siblings: `<name>.txt` is the transcript of the reference (in-context
cloning; without it x-vector-only cloning), `<name>.lang` its language. Hidden entries and symlinks are
never followed or listed, so a request can only name files really inside the two directories.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PRESET_SPEAKERS = ("Vivian", "Serena", "Uncle_Fu", "Dylan", "Eric", "Ryan", "Aiden", "Ono_Anna", "Sohee")
"""The CustomVoice checkpoints' nine speakers, in the contract's order (first = default)."""

DESIGN_VOICE = "design"
"""voice_design mode's only catalog entry: the voice comes from `instructions`."""

LANGUAGES = (
    "English", "Chinese", "Japanese", "Korean", "French", "German", "Spanish", "Italian", "Portuguese",
    "Russian", "Vietnamese", "Thai", "Indonesian", "Arabic", "Turkish", "Polish", "Dutch",
)  # fmt: skip
"""Language names Qwen3-TTS uses; a checkpoint's config says which of them it speaks."""

ISO_LANGUAGES = {
    "en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German",
    "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ru": "Russian", "vi": "Vietnamese", "th": "Thai",
    "id": "Indonesian", "ar": "Arabic", "tr": "Turkish", "pl": "Polish", "nl": "Dutch",
}  # fmt: skip

BUILTIN, CUSTOM = "builtin", "custom"


@dataclass(frozen=True, slots=True)
class ReferenceVoice:
    name: str
    wav: Path
    origin: str  # "builtin" | "custom"

    @property
    def transcript_path(self) -> Path:
        return self.wav.with_suffix(".txt")

    def transcript(self) -> str | None:
        """The reference's transcript, or None (empty or missing: x-vector-only cloning)."""
        text = _read_text(self.transcript_path)
        return text or None

    def language(self) -> str | None:
        return _read_text(self.wav.with_suffix(".lang")) or None

    def mtime(self) -> float:
        return self.wav.stat().st_mtime


def scan_voices(builtin_dir: Path | None, custom_dir: Path | None) -> dict[str, ReferenceVoice]:
    """Every reference voice by name, custom ones shadowing built-in ones."""
    voices: dict[str, ReferenceVoice] = {}
    for root, origin in ((builtin_dir, BUILTIN), (custom_dir, CUSTOM)):
        if root is None:
            continue
        for name, path in _walk_wavs(root):
            voices[name] = ReferenceVoice(name=name, wav=path, origin=origin)
    return dict(sorted(voices.items()))


def canonical_language(value: str) -> str:
    """`english` / `EN` / `en-US` -> `English`; unknown names come back stripped and title-cased."""
    text = value.strip()
    lowered = text.lower()
    if lowered == "auto":
        return "Auto"
    by_name = {name.lower(): name for name in LANGUAGES}
    if lowered in by_name:
        return by_name[lowered]
    code = lowered.replace("_", "-").split("-")[0]
    return ISO_LANGUAGES.get(code, text[:1].upper() + text[1:])


def _walk_wavs(root: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            yield from _walk_wavs(Path(entry.path), f"{prefix}{entry.name}/")
        elif stat.S_ISREG(mode) and entry.name.lower().endswith(".wav") and len(entry.name) > 4:
            yield f"{prefix}{entry.name[:-4]}", Path(entry.path)


def _read_text(path: Path) -> str:
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return ""
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
