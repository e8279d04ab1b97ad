"""The model registry: `models.json` / `models-cpu.json`, validated at start-up.

Schema (see the README's registry table)::

    {"models": {"<slug>": {"executor": "whisper", "repo": "org/name", ...}},
     "groups": {"<name>": {"members": ["<slug>", ...]}}}

`groups` name models that may stay resident together: loading one never evicts another member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from talkies.engines import EXECUTORS
from talkies.engines.base import Modality
from talkies.errors import ConfigError


class ModelSpec(BaseModel):
    """One registry entry. Unknown keys are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    isolation: Literal["process", "inprocess"] | None = None
    compute_type: str | None = None
    description: str | None = None

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"unknown executor {value!r}; valid executors: {', '.join(sorted(EXECUTORS))}")
        return value

    @model_validator(mode="after")
    def _fill_and_check(self) -> ModelSpec:
        info = EXECUTORS[self.executor]
        if self.modality is None:
            object.__setattr__(self, "modality", info.modality)
        elif self.modality != info.modality:
            raise ValueError(f"executor {self.executor!r} is {info.modality}, not {self.modality}")
        if info.needs_repo and not self.repo:
            raise ValueError(f"field 'repo' is required for executor {self.executor!r}")
        return self

    @property
    def kind(self) -> Modality:
        assert self.modality is not None
        return self.modality


class GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    members: tuple[str, ...] = Field(min_length=1)


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: dict[str, ModelSpec] = Field(min_length=1)
    groups: dict[str, GroupSpec] = {}


@dataclass(frozen=True)
class Registry:
    """The enabled models in order, plus groups restricted to them."""

    path: Path
    models: dict[str, ModelSpec]
    groups: dict[str, frozenset[str]]

    def get(self, slug: str) -> ModelSpec | None:
        return self.models.get(slug)

    def group_mates(self, slug: str) -> frozenset[str]:
        """Models that may stay resident while `slug` loads."""
        mates: set[str] = set()
        for members in self.groups.values():
            if slug in members:
                mates |= members
        mates.discard(slug)
        return frozenset(mates)


def default_models_file(device: str) -> Path:
    """models.json for CUDA, models-cpu.json otherwise: from the working directory, else the packaged copy."""
    name = "models.json" if device.startswith("cuda") else "models-cpu.json"
    local = Path.cwd() / name
    if local.is_file():
        return local
    return Path(str(resources.files("talkies") / "data" / name))


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = f"field is required (executors: {', '.join(sorted(EXECUTORS))})"
        lines.append(f"{loc}: {msg}")
    return f"invalid model registry {path}: " + "; ".join(lines)


def load_registry(path: Path, enabled: tuple[str, ...] = ()) -> Registry:
    """Parse and validate `path`; keep only `enabled` slugs (in that order) when given."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model registry not found: {path} (set TALKIES_MODELS_FILE)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read model registry {path}: {exc}") from None
    try:
        parsed = RegistryFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None

    catalog = {slug: spec.model_copy(update={"slug": slug}) for slug, spec in parsed.models.items()}
    for name, group in parsed.groups.items():
        unknown = [m for m in group.members if m not in catalog]
        if unknown:
            raise ConfigError(f"invalid model registry {path}: group {name!r} names unknown models {unknown}")

    if enabled:
        unknown = [s for s in enabled if s not in catalog]
        if unknown:
            raise ConfigError(
                f"TALKIES_ENABLED_MODELS names unknown models {', '.join(unknown)}; "
                f"the catalog in {path} has: {', '.join(catalog)}"
            )
        models = {slug: catalog[slug] for slug in dict.fromkeys(enabled)}
    else:
        models = catalog
    groups = {name: frozenset(m for m in g.members if m in models) for name, g in parsed.groups.items()}
    return Registry(path=path, models=models, groups={k: v for k, v in groups.items() if len(v) > 1})
