"""Server settings, read once from `TALKIES_*` environment variables.

Every field has a bound and a docstring; the README's configuration table mirrors this module.
`load_settings()` turns pydantic's validation errors into one line per bad variable naming the variable,
the value and the accepted form, so a bad value stops start-up with a message a person can act on.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from talkies.errors import ConfigError
from talkies.memory import parse_budget
from talkies.netpolicy import UrlAllowlist, check_allowed_host

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


def _check_url_allowlist(value: tuple[str, ...]) -> tuple[str, ...]:
    UrlAllowlist.parse(value)
    return value


def _check_allowed_hosts(value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(check_allowed_host(v) for v in value)


def _check_budget(value: str) -> str:
    parse_budget(value)
    return value


def _check_bounded(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(value) > 256:
        raise ValueError("at most 256 entries")
    return value


def _check_child_env(value: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in value:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\*?", pattern):
            raise ValueError(
                f"{pattern!r} is not a variable name (letters, digits, _; a trailing * for a prefix)"
            )
        leaked = [name for name in SECRET_VARIABLES if fnmatch.fnmatchcase(name, pattern)]
        if leaked:
            raise ValueError(f"{pattern!r} would pass {', '.join(leaked)} to child servers; secrets never go")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
CsvList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_csv), AfterValidator(_check_bounded)]


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
    """Comma-separated origins allowed by CORS ("*" for any). Empty: no CORS headers. A browser request that
    changes state (POST, PUT, PATCH, DELETE, WebSocket) from any other origin than these or the server's own
    answers 403."""
    ui: bool = True
    """Serve the web playground at / and /ui/. false: those routes are not there (404)."""
    auth_token: SecretStr = SecretStr("")
    """Bearer token (or comma-separated tokens) required on every route but the probes (/healthz, /readyz).
    Empty: open."""
    allowed_hosts: Annotated[CsvList, AfterValidator(_check_allowed_hosts)] = ()
    """Host header values (names or addresses, any port) the server answers; others get 421 (DNS-rebinding
    guard, also on the MCP transport). "*" for any. Empty: localhost, 127.0.0.1 and ::1 (plus the bind
    address when it is a specific one); anything when bound to a non-loopback address with a token set."""

    metrics_public: bool = False
    """Serve `GET /metrics` without a bearer token (for a Prometheus that sends none). Trade-off: anyone who
    reaches the port sees request counts, model names and memory figures."""
    shutdown_grace: Duration = Field(25.0, ge=0, le=3600)
    """On SIGTERM / SIGINT: /readyz answers 503, new requests 503, and requests in flight get this long to
    finish before the server stops anyway (then workers are stopped). A second signal stops at once."""

    # --- models ------------------------------------------------------------------------------------
    device: Annotated[str, AfterValidator(_check_device)] = "auto"
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N."""
    models_file: Path | None = None
    """Registry JSON. Default: models.json on CUDA, models-cpu.json otherwise (cwd first, then packaged)."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Model snapshots under models/<slug>/, staged files under files/."""
    enabled_models: CsvList = ()
    """Ordered whitelist of slugs; empty = every model in the registry."""
    default_asr_model: str = Field("", max_length=200)
    """Model slug for a transcription whose `model` field is empty, and where aliases of models
    that are not enabled go. Empty: the first enabled speech-to-text model."""
    default_tts_model: str = Field("", max_length=200)
    """Model for a speech request whose `model` is empty. Empty: the first enabled text-to-speech model."""
    diarization_model: str = Field("", max_length=200)
    """Speaker-diarization model (modality `diarization`) behind `diarized_json` on mono audio. Empty: the
    first enabled diarization model; with none enabled, a mono file is one speaker `A` (docs/diarization.md).
    `none`: never diarize acoustically. The shipped registries enable `pyannote-seg3-campp`: without its
    snapshot a mono `diarized_json` request answers 503 naming how to get it and this `none`."""
    speaker_match_threshold: float = Field(0.5, ge=-1.0, le=1.0)
    """Cosine similarity a found speaker must reach to take a `known_speaker_names[]` name (one-to-one
    assignment of references to speakers); below it the speaker keeps its letter. 0.5 suits CAM++."""
    max_speaker_reference_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    """Largest `known_speaker_references[]` form field (a data URL) on /v1/audio/transcriptions; the other
    text fields stay capped at 64 KiB. 8 MiB holds a 10 s 48 kHz stereo 16-bit WAV in base64 (2.6 MB)."""
    public_catalog: bool = False
    """Let `GET /v1/audio/voices` and `GET /v1/audio/models` through without a bearer token (Open WebUI
    sends those two without one). Trade-off: anyone who reaches the port can list voices and models."""
    preload: CsvList = ()
    """Slugs to load at start-up (counts as use)."""
    model_ttl: Duration = Field(600.0, ge=0)
    """Idle time before the sweeper unloads a model. 0 disables."""
    sweeper_interval: Duration = Field(60.0, ge=0)
    """How often the sweeper looks for idle models. 0 disables the sweeper."""
    load_timeout: Duration = Field(300.0, gt=0)
    """Longest a model load may take before it is abandoned."""
    max_loaded_models: int = Field(8, ge=1, le=64)
    """Upper bound on models resident at once (least recently used evicted); the memory budget decides
    below it. Registry groups may co-reside beyond it."""
    memory_budget: Annotated[str, AfterValidator(_check_budget)] = Field("", max_length=32)
    """Memory the resident models may hold together: bytes (8G, 512M) or a percentage of the memory
    available at start (60%); GPU memory on CUDA. Empty: 80 % of it. A load that does not fit evicts least
    recently used idle models; a model that can never fit answers 507."""
    swap_max_wait: Duration = Field(10.0, ge=0, le=3600)
    """When a load needs the room of a model that is in use, the resident model first serves its queue
    while requests for the other accumulate, for at most this long; then it takes no new requests, finishes
    those it has and is swapped out. 0 = swap as soon as its running requests finish."""
    max_queue: int = Field(32, ge=0, le=10_000)
    """Requests that may wait per model; one more answers 429. 0 = no waiting at all."""
    queue_timeout: Duration = Field(300.0, gt=0)
    """Longest a request waits in a model's queue before it answers 503 (its own model's load excluded)."""
    max_decodes: int = Field(2, ge=1, le=256)
    """Audio files decoded at once, over all requests (a 4 h file decodes to about 1 GB of float32); more
    admitted requests wait for a decode slot."""
    unload_wait: Duration = Field(10.0, ge=0, le=600)
    """At shutdown, how long the pool waits for calls still inside an engine before it kills their worker
    (an in-process engine with a call inside is never unloaded)."""
    engine_isolation: Literal["process", "inprocess"] = "process"
    """process: engines holding large native memory run in a worker process per model; inprocess: all
    engines in the server process. A registry entry's `isolation` overrides per model."""
    engine_timeout: Duration = Field(600.0, gt=0)
    """Longest a worker-process engine call may go without progress (no chunk, no result, no segment the
    engine reports) before its worker is killed and the request answers 504. Not a cap on a long job."""
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
    block_private_downloads: bool = True
    """Refuse URL downloads resolving to private / loopback / reserved addresses unless allow-listed
    (TALKIES_URL_ALLOWLIST). false: the explicit opt-out, any address but link-local and cloud metadata
    (refused always)."""
    url_allowlist: Annotated[CsvList, AfterValidator(_check_url_allowlist)] = ()
    """Host names, IP addresses and CIDRs (10.0.0.0/8, fd00::/8) whose private addresses URL downloads may
    reach with TALKIES_BLOCK_PRIVATE_DOWNLOADS on. Link-local and cloud metadata stay refused."""
    max_input_chars: int = Field(4096, ge=1, le=1_000_000)
    """Longest speech `input` (characters); longer answers 400 naming the limit."""
    wav_streaming: bool = False
    """Stream `response_format=wav` speech as it is synthesized, behind a header that declares an unknown
    length (0xFFFFFFFF, as OpenAI does). false: a whole-body WAV with exact sizes, unless the request sets
    `stream_format` (`audio` or `sse`), which always streams."""
    download_timeout: Duration = Field(600.0, gt=0, le=86_400)
    """Longest a `file_path` URL download may take in all (redirects included), besides the per-read
    timeout; past it the request answers 400 naming this variable."""
    child_env: Annotated[CsvList, AfterValidator(_check_child_env)] = ()
    """Variables of talkies' environment passed to `process` engines' servers on top of the built-in
    allow-list (PATH, HOME, locale, the CUDA / Hugging Face ones): names, or `PREFIX*`. talkies' secrets
    (TALKIES_AUTH_TOKEN) are refused."""

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

    # --- qwen3-tts ----------------------------------------------------------------------------------
    qwen3_voices_dir: Path | None = None
    """Built-in Qwen3-TTS reference voices (<name>.wav + .txt transcript + optional .lang). Default: the
    starter voices shipped with talkies. Custom voices live in $TALKIES_DATA_DIR/custom-voices."""

    # --- Wyoming (Home Assistant) ------------------------------------------------------------------
    wyoming_uri: str = Field("", max_length=4096, pattern=r"^$|^(tcp|unix)://")
    """Serve the Wyoming protocol too: tcp://HOST:PORT (e.g. tcp://0.0.0.0:10300) or unix:///path.
    Empty: off. Wyoming has no authentication: bind it to an interface only trusted clients reach."""
    wyoming_zeroconf: str = Field("", max_length=63)
    """Announce the Wyoming server over zeroconf under this name (needs the `wyoming-zeroconf` extra).
    Empty: no announcement."""
    wyoming_max_connections: int = Field(32, ge=1, le=4096)
    """Open Wyoming connections at most; one more is answered an `error` event and closed."""
    wyoming_idle_timeout: Duration = Field(120.0, gt=0, le=24 * 3600)
    """A Wyoming read (an event, or the rest of a half-sent one) that gets no data for this long closes
    the connection with an `error` event."""

    # --- realtime transcription (WebSocket /v1/realtime, docs/realtime.md) ---------------------------
    realtime_max_sessions: int = Field(32, ge=0, le=10_000)
    """Realtime sessions open at once; one more is answered with an `error` event and closed (1013).
    0 turns the endpoint off."""
    realtime_idle_timeout: Duration = Field(60.0, gt=0, le=86_400)
    """A realtime session that receives no message for this long, while none of its turns is being
    transcribed, is closed (an `error` event, then close code 1000)."""
    realtime_max_turn_seconds: Duration = Field(30.0, ge=1, le=600)
    """Longest turn (input audio buffer) in seconds. Server VAD commits a turn that reaches it; with manual
    commit, an append past it is refused with an `error` event until the client commits or clears."""
    realtime_max_pending_seconds: Duration = Field(120.0, ge=1, le=3600)
    """Audio one session may hold in seconds: the open turn plus committed turns not yet transcribed. An
    append past it is refused with an `error` event (the client sends faster than the model keeps up)."""
    realtime_delta_interval_ms: int = Field(1000, ge=0, le=60_000)
    """While a turn is open, a partial decode of its audio so far every this many ms of new audio, sent as
    `...transcription.delta` events; only on engines whose decodes are cheap (pocketsphinx). 0: off."""

    # --- whisper -------------------------------------------------------------------------------------
    whisper_batch_size: int = Field(8, ge=1, le=256)
    """Chunks decoded together by faster-whisper's batched pipeline on long files."""

    batching: bool = True
    """Cross-request batching: concurrent requests for one model share engine calls (docs/batching.md);
    false decodes each request on its own."""

    # --- NeMo ----------------------------------------------------------------------------------------
    nemo_batch_size: int = Field(4, ge=1, le=256)
    """VAD regions of a long file that the NeMo engines (parakeet, canary_*) decode together."""

    # --- Ray Serve (`talkies serve --ray`, talkies.ray; docs/scale-out.md) ----------------------------
    ray_address: str = Field("", max_length=4096)
    """Ray cluster to deploy to (`ray://host:10001`, `host:6379` or `auto`); `--address` overrides it.
    Empty: a Ray instance started for this process on this machine."""
    ray_min_replicas: int = Field(1, ge=0, le=1000)
    """Fewest replicas of each model-server deployment (0: scale to zero when idle)."""
    ray_max_replicas: int = Field(1, ge=1, le=1000)
    """Most replicas of each model-server deployment; Serve's autoscaler moves between the two."""
    ray_target_ongoing_requests: float = Field(2.0, gt=0, le=1000)
    """Requests per model-server replica the autoscaler aims at."""
    ray_max_ongoing_requests: int = Field(8, ge=1, le=10_000)
    """Requests one model-server replica takes at once; more wait in Serve's router."""
    ray_max_models_per_replica: int = Field(0, ge=0, le=64)
    """Models one model-server replica holds (`max_num_models_per_replica`; least recently used evicted).
    0: TALKIES_MAX_LOADED_MODELS. TALKIES_MEMORY_BUDGET still applies inside each replica."""
    ray_replica_cpus: float = Field(1.0, ge=0, le=1024)
    """CPUs Ray reserves for each model-server replica (`ray_actor_options.num_cpus`)."""
    ray_replica_gpus: float = Field(1.0, gt=0, le=64)
    """GPUs Ray reserves for each replica of the GPU model-server deployment (fractions share a GPU)."""
    ray_ingress_replicas: int = Field(1, ge=1, le=100)
    """Replicas of the ingress deployment (the HTTP app; it holds no model). Must be 1 with
    TALKIES_WYOMING_URI or `process` models, which run inside the ingress replica."""
    ray_direct_port: int = Field(0, ge=0, le=65535)
    """Experimental (Ray Serve's direct ingress): the ingress replica also answers HTTP itself on this port,
    on TALKIES_HOST, skipping Serve's proxy hop (about 5 ms less per request on a 2-core machine). 0: off.
    Only when `talkies serve --ray` starts Ray itself (no address) and with one ingress replica."""

    @property
    def auth_tokens(self) -> tuple[str, ...]:
        return _split_csv(self.auth_token.get_secret_value())

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def custom_voices_dir(self) -> Path:
        return self.data_dir / "custom-voices"

    @property
    def qwen3_voices_path(self) -> Path:
        if self.qwen3_voices_dir is not None:
            return self.qwen3_voices_dir
        from importlib import resources

        return Path(str(resources.files("talkies") / "data" / "qwen3-voices"))

    @property
    def url_cache_dir(self) -> Path:
        """Fetched `file_path` URLs: outside `files_dir`, so /v1/files can never reach them."""
        return self.data_dir / "cache" / "urls"

    @property
    def upload_tmp_dir(self) -> Path:
        """Multipart uploads being received (removed when the request ends, and at start-up)."""
        return self.data_dir / "tmp"


SECRET_VARIABLES = frozenset(
    f"TALKIES_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if field.annotation is SecretStr
)
"""The variables of secret settings: never handed to a child server (`TALKIES_CHILD_ENV` refuses them)."""


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
