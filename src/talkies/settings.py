"""Server settings, read once from `TALKIES_*` environment variables.

Every field has a bound and a docstring; the README's configuration table mirrors this module.
`load_settings()` turns pydantic's validation errors into one line per bad variable naming the variable,
the value and the accepted form, so a bad value stops start-up with a message a person can act on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from talkies.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
DURATION_FORM = "a duration such as 90, 90s, 45m, 1h30m or 3h30m5s"


def parse_duration(value: object) -> float:
    """Go-style duration ("3h30m5s", "45m", "90s", "250ms") or bare seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_FORM}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"expected {DURATION_FORM}") from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds < 0:
        raise ValueError(f"expected {DURATION_FORM}, not a negative value")
    return seconds


def _split_csv(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [str(v) for v in value] if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(item.strip() for item in items if item.strip())


def _check_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
CsvList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_csv)]


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/talkies` (or ~/.local/share/talkies): writable by any user, no root needed.
    Containers set TALKIES_DATA_DIR=/data."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "talkies"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALKIES_", extra="ignore", frozen=True)

    # --- server ------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address to bind. Containers set 0.0.0.0."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port to listen on."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Log verbosity."""
    cors_origins: CsvList = ()
    """Comma-separated origins allowed by CORS ("*" for any). Empty: no CORS headers."""
    auth_token: SecretStr = SecretStr("")
    """Bearer token (or comma-separated tokens) required on every route but /healthz. Empty: open."""

    # --- models ------------------------------------------------------------------------------------
    device: Annotated[str, AfterValidator(_check_device)] = "auto"
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N."""
    models_file: Path | None = None
    """Registry JSON. Default: models.json on CUDA, models-cpu.json otherwise (cwd first, then packaged)."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Model snapshots under models/<slug>/, staged files under files/."""
    enabled_models: CsvList = ()
    """Ordered whitelist of slugs; empty = every model in the registry."""
    preload: CsvList = ()
    """Slugs to load at start-up (counts as use)."""
    model_ttl: Duration = Field(600.0, ge=0)
    """Idle time before the sweeper unloads a model. 0 disables."""
    sweeper_interval: Duration = Field(60.0, ge=0)
    """How often the sweeper looks for idle models. 0 disables the sweeper."""
    load_timeout: Duration = Field(300.0, gt=0)
    """Longest a model load may take before it is abandoned."""
    max_loaded_models: int = Field(1, ge=1, le=64)
    """Models resident at once (least recently used evicted). Registry groups may co-reside beyond it."""
    max_queue: int = Field(32, ge=0, le=10_000)
    """Requests that may wait per model; one more answers 429. 0 = no waiting at all."""
    queue_timeout: Duration = Field(300.0, gt=0)
    """Longest a request waits in a model's queue before it answers 503 (its own model's load excluded)."""
    engine_isolation: Literal["process", "inprocess"] = "process"
    """process: engines holding large native memory run in a worker process per model; inprocess: all
    engines in the server process. A registry entry's `isolation` overrides per model."""
    engine_timeout: Duration = Field(600.0, gt=0)
    """Longest one engine call (a transcription or a synthesis) may run in a worker before it is killed."""
    cpu_threads: int = Field(0, ge=0, le=1024)
    """Threads per engine on CPU. 0 = the number of cores available to the process."""

    # --- uploads, staging and downloads ----------------------------------------------------------
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)
    """Largest upload (transcription `file`, PUT /v1/files). Larger answers 413."""
    max_audio_seconds: Duration = Field(4 * 3600.0, gt=0)
    """Longest audio accepted for transcription; longer answers 400."""
    max_download_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    """Largest URL download for `file_path`."""
    download_cache_bytes: int = Field(10 * 1024 * 1024 * 1024, ge=0)
    """Bound on files/downloads/; least recently used entries are evicted. 0 = unbounded."""
    block_private_downloads: bool = False
    """Refuse URL downloads resolving to private / loopback / reserved addresses. Link-local and
    cloud-metadata addresses are refused always."""

    # --- VAD slicing -------------------------------------------------------------------------------
    vad_chunk_threshold: Duration = Field(30.0, gt=0)
    """Audio longer than this (seconds) is cut into speech regions with Silero VAD."""
    vad_max_speech: Duration = Field(28.0, gt=0)
    """Longest speech region handed to an engine; longer regions split at their longest silence."""
    vad_min_silence_ms: int = Field(500, ge=0, le=60_000)
    """Shortest silence (ms) that separates two regions."""
    vad_speech_pad_ms: int = Field(200, ge=0, le=10_000)
    """Padding (ms) added around each region."""
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    """Speech probability threshold."""

    # --- whisper -------------------------------------------------------------------------------------
    whisper_batch_size: int = Field(8, ge=1, le=256)
    """Chunks decoded together by faster-whisper's batched pipeline on long files."""

    @property
    def auth_tokens(self) -> tuple[str, ...]:
        return _split_csv(self.auth_token.get_secret_value())

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"


def _describe(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else "?"
    var = f"TALKIES_{field.upper()}"
    value = os.environ.get(var, error.get("input"))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{var}={value!r} is invalid: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus explicit overrides, used by tests and the CLI)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None
