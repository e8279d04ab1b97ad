"""The registry schema: executor names and what each needs, and the shape of a registry entry.

This module imports no engine and nothing else of talkies: `talkies.registry` (reading the files),
`talkies.engines` (building engines) and the services all import it, never the other way round.
An executor's `target` names its engine class as a string; the class is imported only when a model of
that executor is first built (`talkies.engines.engine_class`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Modality = Literal["asr", "tts", "diarization"]


@dataclass(frozen=True, slots=True)
class ExecutorInfo:
    name: str
    modality: Modality | None  # None: the registry entry must say (the `process` executor serves either)
    target: str | None  # "module:Class"; None = not built yet
    extra: str | None = None  # pip extra that installs its libraries
    requires: tuple[str, ...] = ()  # importable modules it needs
    needs_repo: bool = True  # False: weight-free, no snapshot
    cuda_only: bool = False
    # Where its models run unless the registry entry or TALKIES_ENGINE_ISOLATION says otherwise: a worker
    # process for anything holding large native memory or running native code, the server process for
    # espeak-ng (a subprocess per call already). server_only: always the server process.
    isolation: Literal["process", "inprocess"] = "process"
    server_only: bool = False
    shares_weights: bool = False  # slugs on one repo share one loaded copy (never evict each other)
    snapshot_patterns: tuple[str, ...] | None = None  # repository files it reads (None: all); `talkies pull`
    # globs a snapshot laid out by hand must match (each at least one file); () here: its engine class's
    # `required_files`, if any (`talkies.engines.required_files`)
    required_files: tuple[str, ...] = ()
    # Cross-request batching (docs/batching.md): units of concurrent requests per engine call, and how
    # long the first unit waits for company; 0 = this executor does not batch across requests.
    max_batch_size: int = 0
    max_batch_wait_ms: float = 0.0


EXECUTORS: dict[str, ExecutorInfo] = {
    info.name: info
    for info in (
        ExecutorInfo(
            "whisper",
            "asr",
            "talkies.engines.whisper.engine:WhisperEngine",
            "whisper",
            ("faster_whisper",),
            snapshot_patterns=("model.bin", "*.json", "vocabulary.*"),
            required_files=("config.json", "model.bin", "tokenizer.json", "vocabulary.*"),
            max_batch_size=8,
            max_batch_wait_ms=10.0,
        ),
        ExecutorInfo(
            "parakeet",
            "asr",
            "talkies.engines.nemo.parakeet:ParakeetEngine",
            "nemo",
            ("nemo",),
            max_batch_size=4,
            max_batch_wait_ms=10.0,
        ),
        ExecutorInfo(
            "parakeet_cpp",
            "asr",
            "talkies.engines.parakeet_cpp.engine:ParakeetCppEngine",
            "parakeet-cpp",
            ("onnx_asr", "onnxruntime"),
            max_batch_size=8,
            max_batch_wait_ms=10.0,
        ),
        ExecutorInfo(
            "canary_multitask",
            "asr",
            "talkies.engines.nemo.canary:CanaryEngine",
            "nemo",
            ("nemo",),
            shares_weights=True,
            max_batch_size=4,
            max_batch_wait_ms=10.0,
        ),
        ExecutorInfo(
            "canary_salm", "asr", "talkies.engines.nemo.salm:CanarySalmEngine", "nemo", ("nemo", "peft")
        ),
        ExecutorInfo(
            "pocketsphinx",
            "asr",
            "talkies.engines.pocketsphinx:PocketsphinxEngine",
            "cpu",
            ("pocketsphinx",),
            needs_repo=False,
            # a worker process even though it is weight-free: native code, so a crash costs one request
            # (in the server process it no longer stalls the loop: it decodes through ctypes, GIL released)
        ),
        ExecutorInfo(
            "kokoro",
            "tts",
            "talkies.engines.kokoro.pytorch:KokoroEngine",
            "kokoro",
            ("kokoro", "misaki", "torch"),
            snapshot_patterns=("config.json", "kokoro-v*.pth", "voices/*.pt"),
            required_files=("config.json", "*.pth"),
        ),
        ExecutorInfo(
            "kokoro_nvidia",
            "tts",
            "talkies.engines.kokoro.onnx:KokoroOnnxEngine",
            "kokoro-onnx",
            ("onnxruntime", "phonemizer"),
        ),
        # CPU: qwen-tts on transformers; CUDA: faster-qwen3-tts as well (checked when the model loads)
        ExecutorInfo(
            "qwen3_tts", "tts", "talkies.engines.qwen3.engine:Qwen3Engine", "qwen3", ("qwen_tts", "torch")
        ),
        ExecutorInfo(
            "espeak",
            "tts",
            "talkies.engines.espeak:EspeakEngine",
            None,
            needs_repo=False,
            isolation="inprocess",
        ),
        # Speaker diarization (who spoke when) for diarized_json on mono audio: docs/diarization.md
        ExecutorInfo(
            "sherpa_diarization",
            "diarization",
            "talkies.engines.diarization.sherpa:SherpaDiarizer",
            "diarization",
            ("sherpa_onnx",),
            snapshot_patterns=("segmentation.onnx", "embedding.onnx", "model.onnx", "*.md", "LICENSE*"),
        ),
        ExecutorInfo(
            "sortformer",
            "diarization",
            "talkies.engines.diarization.sortformer:SortformerDiarizer",
            "nemo",
            ("nemo",),
            snapshot_patterns=("*.nemo",),
        ),
        # An external server run as a managed child (llama-swap style); the engine itself holds no model.
        ExecutorInfo(
            "process",
            None,
            "talkies.engines.process.engine:ExternalProcessEngine",
            None,
            needs_repo=False,
            isolation="inprocess",
            server_only=True,
        ),
    )
}

PROCESS_FIELDS = (
    "cmd",
    "cmdStop",
    "proxy",
    "env",
    "checkEndpoint",
    "healthCheckTimeout",
    "unloadTimeout",
    "useModelName",
    "concurrencyLimit",
)
"""Registry keys (llama-swap's spelling) that only the `process` executor takes."""

DEFAULT_PROXY = "http://127.0.0.1:${PORT}"
DEFAULT_CHECK_ENDPOINT = "/health"
DEFAULT_HEALTH_CHECK_TIMEOUT = 120.0
DEFAULT_UNLOAD_TIMEOUT = 10.0
DEFAULT_PROCESS_CONCURRENCY = 10
"""llama-swap's `concurrencyLimit: 0` (the default) means 10 requests at once."""

_ENV_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


class ModelSpec(BaseModel):
    """One registry entry. Unknown keys are refused so a typo never passes silently.

    The `process` executor's keys keep llama-swap's spelling (`cmdStop`, `checkEndpoint`, ...): a model
    block copied from a llama-swap config validates here unchanged. Macros are expanded by the loader
    (`talkies.registry.macros`) before an entry reaches this model, except `${PORT}` (a free port, chosen
    when the child starts) and `${PID}` in `cmdStop`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    slug: str = ""  # filled from the mapping key
    executor: str
    repo: str | None = None
    modality: Modality | None = None
    gguf_file: str | None = None
    default_source_lang: str | None = None
    default_target_lang: str | None = None
    default_task: Literal["asr", "s2t_translation"] = "asr"
    default_voice: str | None = None
    default_language: str | None = None
    qwen3_mode: Literal["base", "custom_voice", "voice_design"] | None = None
    languages: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    max_concurrency: int = Field(1, ge=1, le=256)
    max_queue: int | None = Field(None, ge=0, le=10_000)
    max_batch_size: int | None = Field(None, ge=1, le=256)
    """Work units of concurrent requests decoded in one engine call; absent: the executor's default
    (docs/batching.md); 1 turns cross-request batching off for this model."""
    max_batch_wait_ms: float | None = Field(None, ge=0, le=10_000)
    """Milliseconds a batch waits for more units after its first one arrives; absent: the executor's."""
    isolation: Literal["process", "inprocess"] | None = None
    compute_type: str | None = None
    description: str | None = None
    aliases: tuple[str, ...] = ()
    """Other names a request's `model` may use for this entry (llama-swap's `aliases`); each must be
    unique across the registry and differ from every slug."""
    voice_aliases: dict[str, str] = {}
    """TTS only: voice names (e.g. OpenAI's `alloy`) -> one of this model's voices."""
    name: str | None = None
    """Display name (llama-swap's `name`), shown in /v1/models."""
    download_bytes: int | None = Field(None, ge=0, le=10**13)
    """Estimated size of the snapshot `talkies pull` fetches, shown in /v1/models until the hub's listing was
    read (then the listing's exact size is shown)."""
    unlisted: bool = False
    """Hidden from /v1/models and the voice list, still served by name (llama-swap's `unlisted`)."""
    ttl: int | None = Field(None, ge=-1, le=365 * 24 * 3600)
    """Seconds idle before the sweeper unloads this model; 0 = never, -1 or absent = TALKIES_MODEL_TTL."""

    # --- the `process` executor (llama-swap's keys) -------------------------------------------------
    cmd: str | tuple[str, ...] | None = None
    """The server's command line: one string (several lines allowed, `#` lines are comments, a trailing
    backslash continues) split like a POSIX shell would, or an argv list. Never run through a shell."""
    cmd_stop: str | tuple[str, ...] | None = Field(None, alias="cmdStop")
    """Command that stops the server (`${PID}` is its process id); default SIGTERM to its process group."""
    proxy: str | None = None
    """Where the server listens; default http://127.0.0.1:${PORT}."""
    env: tuple[str, ...] = ()
    """Extra environment for the server, `["NAME=value", ...]`."""
    check_endpoint: str | None = Field(None, alias="checkEndpoint")
    """Path polled after start until it answers 200; default /health; `none` skips the check."""
    health_check_timeout: float | None = Field(None, alias="healthCheckTimeout", gt=0, le=24 * 3600)
    """Seconds the server may take to become healthy; default 120 (or the file's `healthCheckTimeout`)."""
    unload_timeout: float | None = Field(None, alias="unloadTimeout", ge=0, le=3600)
    """Seconds between the stop signal (or `cmdStop`) and SIGKILL; default 10."""
    use_model_name: str | None = Field(None, alias="useModelName", min_length=1)
    """The `model` value sent to the server instead of the one the client sent."""
    concurrency_limit: int | None = Field(None, alias="concurrencyLimit", ge=0, le=256)
    """llama-swap's name for max_concurrency; 0 = its default (10)."""

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"unknown executor {value!r}; valid executors: {', '.join(sorted(EXECUTORS))}")
        return value

    @field_validator("env")
    @classmethod
    def _env_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not _ENV_ENTRY.fullmatch(entry):
                raise ValueError(f"env entry {entry!r} is not NAME=value")
        return value

    @model_validator(mode="before")
    @classmethod
    def _max_concurrency_from_limit(cls, data: object) -> object:
        """llama-swap's `concurrencyLimit` is our `max_concurrency` (0 or absent on a process: 10)."""
        if not isinstance(data, dict) or data.get("executor") != "process":
            return data
        limit = data.get("concurrencyLimit")
        if "max_concurrency" in data and limit not in (None, data["max_concurrency"]):
            raise ValueError("give either 'concurrencyLimit' or 'max_concurrency', not both")
        if "max_concurrency" not in data:
            data = {**data, "max_concurrency": limit or DEFAULT_PROCESS_CONCURRENCY}
        return data

    @model_validator(mode="after")
    def _fill_and_check(self) -> ModelSpec:
        info = EXECUTORS[self.executor]
        if info.modality is None:
            if self.modality is None:
                raise ValueError(
                    f"field 'modality' (asr, tts or diarization) is required for executor {self.executor!r}"
                )
        elif self.modality is None:
            object.__setattr__(self, "modality", info.modality)
        elif self.modality != info.modality:
            raise ValueError(f"executor {self.executor!r} is {info.modality}, not {self.modality}")
        if info.needs_repo and not self.repo:
            raise ValueError(f"field 'repo' is required for executor {self.executor!r}")
        if self.voice_aliases and (info.modality or self.modality) != "tts":
            raise ValueError("field 'voice_aliases' is only for text-to-speech models")
        for name in (*self.aliases, *self.voice_aliases, *self.voice_aliases.values()):
            if not name.strip() or name != name.strip():
                raise ValueError(f"alias {name!r} must be a non-empty name without surrounding spaces")
        if self.executor == "process":
            if not self.cmd:
                raise ValueError("field 'cmd' is required for executor 'process'")
        else:
            given = [f for f in PROCESS_FIELDS if getattr(self, _ATTR[f]) not in (None, ())]
            if given:
                raise ValueError(f"{', '.join(given)}: only for executor 'process', not {self.executor!r}")
        return self

    @property
    def kind(self) -> Modality:
        assert self.modality is not None
        return self.modality


_ATTR = {
    "cmd": "cmd",
    "cmdStop": "cmd_stop",
    "proxy": "proxy",
    "env": "env",
    "checkEndpoint": "check_endpoint",
    "healthCheckTimeout": "health_check_timeout",
    "unloadTimeout": "unload_timeout",
    "useModelName": "use_model_name",
    "concurrencyLimit": "concurrency_limit",
}


class GroupSpec(BaseModel):
    """A registry group. Without flags: the members may stay resident together and do not count against
    TALKIES_MAX_LOADED_MODELS for each other (talkies' original meaning). With any of `swap`, `exclusive`,
    `persistent`: llama-swap's meaning, unset flags taking llama-swap's defaults (see
    `talkies.registry.groups`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    members: tuple[str, ...] = Field(min_length=1)
    swap: bool | None = None
    """Only one member resident at a time (llama-swap default: true)."""
    exclusive: bool | None = None
    """Loading a member unloads every other group's models (llama-swap default: true)."""
    persistent: bool | None = None
    """Other groups' loads never unload this group's members (llama-swap default: false)."""

    @property
    def flagged(self) -> bool:
        """True when the group uses llama-swap's semantics."""
        return not (self.swap is None and self.exclusive is None and self.persistent is None)


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: dict[str, ModelSpec] = Field(min_length=1)
    groups: dict[str, GroupSpec] = {}
    start_port: int | None = Field(None, alias="startPort", ge=1, le=65535)
    """First port tried for `${PORT}` (llama-swap's `startPort`); absent: any free port."""
    # `macros`, `healthCheckTimeout` and `unloadTimeout` at the top level are consumed by the loader
    # (talkies.registry.macros) before validation.
