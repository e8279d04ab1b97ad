"""The model registry: `models.json` / `models-cpu.json` (or a llama-swap `config.yaml`), validated at
start-up.

Schema (see the README's registry table)::

    {"models": {"<slug>": {"executor": "whisper", "repo": "org/name", ...}},
     "groups": {"<name>": {"members": ["<slug>", ...]}},
     "macros": {...}, "startPort": 5800, "healthCheckTimeout": 120, "unloadTimeout": 10, "globalTTL": 0}

`groups` name models that may stay resident together: loading one never evicts another member; with
`swap` / `exclusive` / `persistent` flags they take llama-swap's meaning (`talkies.registry.groups`). A
model belongs to one group at most. Macros (`talkies.registry.macros`) are expanded before validation; the
top-level `healthCheckTimeout`, `unloadTimeout` and `globalTTL` are defaults for the models that do not
set their own. A file ending in .yaml / .yml is read as a llama-swap config (`talkies.registry.llamaswap`).

Names (docs/openai.md, "Model names"): a request's `model` is looked up as

1. a slug;
2. OpenAI's own names (`OPENAI_MODEL_NAMES`: `whisper-1`, `tts-1`, ...) when TALKIES_DEFAULT_ASR_MODEL /
   TALKIES_DEFAULT_TTS_MODEL names the default of that kind: that model, unless the operator's own registry
   file (not one talkies ships) gives the name to a model as an alias;
3. one of a model's `aliases`; an alias whose model is not enabled (TALKIES_ENABLED_MODELS) goes to the
   default model of that modality, so `whisper-1` keeps working on a server that enabled only pocketsphinx.

The default model of a modality (an empty `model`, Wyoming without a name, MCP without a model) is
TALKIES_DEFAULT_*_MODEL, else the first enabled model of that kind that is installed (the `installed`
predicate the app passes in: it can run here without a download), else the first enabled one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from talkies.errors import ConfigError
from talkies.registry.batching import batching_concurrency
from talkies.registry.llamaswap import is_llamaswap_file, read_llamaswap
from talkies.registry.macros import expand_env_tree, expand_macros
from talkies.registry.schema import EXECUTORS, GroupSpec, Modality, ModelSpec, RegistryFile

FILE_DEFAULTS = {
    "healthCheckTimeout": "healthCheckTimeout",
    "unloadTimeout": "unloadTimeout",
    "globalTTL": "ttl",
}
"""Top-level keys that give models a default: top-level name -> model field."""

__all__ = [
    "OPENAI_MODEL_NAMES",
    "OPENAI_VOICES",
    "GroupSpec",
    "ModelSpec",
    "Registry",
    "RegistryFile",
    "default_models_file",
    "load_registry",
]

OPENAI_MODEL_NAMES: dict[str, Modality] = {
    "whisper-1": "asr",
    "gpt-4o-transcribe": "asr",
    "gpt-4o-mini-transcribe": "asr",
    "tts-1": "tts",
    "tts-1-hd": "tts",
    "gpt-4o-mini-tts": "tts",
}
"""OpenAI's model names -> their kind: they go to the configured default model of that kind."""
OPENAI_VOICES = frozenset(
    ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
     "shimmer", "verse")
)  # fmt: skip
"""OpenAI's voice names: a model's `voice_aliases` map them; a model without one speaks its default voice."""


@dataclass(frozen=True)
class Registry:
    """The enabled models in order, plus groups restricted to them."""

    path: Path
    models: dict[str, ModelSpec]
    groups: dict[str, frozenset[str]]
    aliases: dict[str, str] = field(default_factory=dict)
    """alias -> enabled slug."""
    orphan_aliases: dict[str, Modality] = field(default_factory=dict)
    """Aliases of catalog models that are not enabled -> their modality (they go to its default model)."""
    defaults: dict[Modality, str] = field(default_factory=dict)
    """Modality -> the configured default, else the first enabled model of that kind (absent when no
    enabled model has that modality). Requests use `default()`, which prefers an installed model."""
    configured: dict[Modality, str] = field(default_factory=dict)
    """Modality -> TALKIES_DEFAULT_*_MODEL, where set."""
    shipped: bool = False
    """The file is one talkies ships: its aliases of OpenAI's names give way to a configured default."""
    installed: Callable[[ModelSpec], bool] | None = field(default=None, compare=False)
    """Whether a model can serve without a download (None: every model counts as installed)."""
    group_specs: dict[str, GroupSpec] = field(default_factory=dict)  # members restricted to enabled models
    start_port: int | None = None  # first port tried for ${PORT}; None = any free port

    def group_of(self, slug: str) -> tuple[str, GroupSpec] | None:
        """The one group `slug` belongs to, with its name."""
        for name, group in self.group_specs.items():
            if slug in group.members:
                return name, group
        return None

    def resolve(self, name: str) -> str | None:
        """The slug `name` stands for (itself, an OpenAI name with a configured default, an alias, or an
        alias of a disabled model: its modality's default); None if unknown."""
        if name in self.models:
            return name
        kind = OPENAI_MODEL_NAMES.get(name)
        declared = name in self.aliases or name in self.orphan_aliases
        if kind in self.configured and (self.shipped or not declared):
            return self.configured[kind]
        slug = self.aliases.get(name)
        if slug is None and name in self.orphan_aliases:
            slug = self.default_slug(self.orphan_aliases[name])
        return slug

    def get(self, name: str) -> ModelSpec | None:
        """The enabled model called `name` (a slug or an alias); None when there is none."""
        slug = self.resolve(name)
        return None if slug is None else self.models[slug]

    def default(self, kind: Modality) -> ModelSpec | None:
        slug = self.default_slug(kind)
        return self.models[slug] if slug is not None else None

    def default_slug(self, kind: Modality) -> str | None:
        """TALKIES_DEFAULT_*_MODEL, else the first installed model of `kind`, else the first of `kind`."""
        if kind in self.configured:
            return self.configured[kind]
        first = None
        for slug, spec in self.models.items():
            if spec.kind != kind:
                continue
            if self.installed is None or self.installed(spec):
                return slug
            first = first or slug
        return first

    def aliases_of(self, slug: str) -> list[str]:
        return [alias for alias, target in self.aliases.items() if target == slug]

    def group_mates(self, slug: str) -> frozenset[str]:
        """Models that may stay resident while `slug` loads: its groups' members, and the slugs that
        share its weights (same repository on an executor that shares them: one copy in memory)."""
        mates: set[str] = set(self.weight_mates(slug))
        for members in self.groups.values():
            if slug in members:
                mates |= members
        mates.discard(slug)
        return frozenset(mates)

    def weight_mates(self, slug: str) -> frozenset[str]:
        """Other slugs whose engine holds the same weights as `slug`'s (see SnapshotEngine.share_weights)."""
        spec = self.models.get(slug)
        if spec is None or not spec.repo or not EXECUTORS[spec.executor].shares_weights:
            return frozenset()
        return frozenset(
            other
            for other, each in self.models.items()
            if other != slug and each.executor == spec.executor and each.repo == spec.repo
        )


def default_models_file(device: str) -> Path:
    """models.json for CUDA, models-cpu.json otherwise: from the working directory, else the packaged copy."""
    name = "models.json" if device.startswith("cuda") else "models-cpu.json"
    local = Path.cwd() / name
    if local.is_file():
        return local
    return Path(str(resources.files("talkies") / "data" / name))


def is_shipped_file(path: Path) -> bool:
    """Whether `path` holds a registry talkies ships (models.json / models-cpu.json, as packaged or in the
    source tree), byte for byte: a copy the operator edited is their own."""
    try:
        content = path.read_bytes()
    except OSError:
        return False
    packaged = resources.files("talkies") / "data"
    source_tree = Path(__file__).resolve().parents[3]
    for name in ("models.json", "models-cpu.json"):
        for candidate in (packaged / name, source_tree / name):
            try:
                if candidate.is_file() and candidate.read_bytes() == content:
                    return True
            except OSError:
                continue
    return False


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = f"field is required (executors: {', '.join(sorted(EXECUTORS))})"
        lines.append(f"{loc}: {msg}")
    return f"invalid model registry {path}: " + "; ".join(lines)


def _pick_default(models: dict[str, ModelSpec], kind: Modality, wanted: str | None) -> str | None:
    if wanted:
        var = f"TALKIES_DEFAULT_{kind.upper()}_MODEL"
        spec = models.get(wanted)
        if spec is None:
            raise ConfigError(f"{var}={wanted!r} is not an enabled model; enabled: {', '.join(models)}")
        if spec.kind != kind:
            raise ConfigError(f"{var}={wanted!r} is a {spec.kind} model, not {kind}")
        return wanted
    return next((slug for slug, spec in models.items() if spec.kind == kind), None)


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"model registry not found: {path} (set TALKIES_MODELS_FILE)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read model registry {path}: {exc}") from None
    if is_llamaswap_file(path):
        return read_llamaswap(path, text)
    try:
        return expand_env_tree(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cannot read model registry {path}: {exc}") from None


def _file_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """Top-level `healthCheckTimeout` / `unloadTimeout` (process models) and `globalTTL` (every model)
    become each model's own value unless it sets one."""
    raw = dict(raw)
    defaults = {field: raw.pop(key) for key, field in FILE_DEFAULTS.items() if key in raw}
    models = raw.get("models")
    if defaults and isinstance(models, dict):
        for slug, entry in models.items():
            if not isinstance(entry, dict):
                continue
            for field, value in defaults.items():
                applies = field == "ttl" or entry.get("executor") == "process"
                if applies and entry.get(field) in (None, -1):
                    entry = {**entry, field: value}
            models[slug] = entry
    return raw


def load_registry(
    path: Path,
    enabled: tuple[str, ...] = (),
    *,
    default_asr: str | None = None,
    default_tts: str | None = None,
    installed: Callable[[ModelSpec], bool] | None = None,
    batching: bool = False,
) -> Registry:
    """Parse and validate `path`; keep only `enabled` slugs (in that order) when given.

    `batching` (TALKIES_BATCHING): models that batch across requests and leave `max_concurrency` unset
    admit up to `max_batch_size` requests at once (`registry.batching.batching_concurrency`).

    `default_asr` / `default_tts` (TALKIES_DEFAULT_*_MODEL) must name enabled models of that kind;
    `installed` tells which models can serve without a download (it picks the default otherwise)."""
    raw = _read(path)
    if isinstance(raw, dict):
        raw = _file_defaults(expand_macros(raw, f"model registry {path}"))
    try:
        parsed = RegistryFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None

    catalog = {
        slug: batching_concurrency(spec.model_copy(update={"slug": slug}), batching)
        for slug, spec in parsed.models.items()
    }
    member_of: dict[str, str] = {}
    for name, group in parsed.groups.items():
        unknown = [m for m in group.members if m not in catalog]
        if unknown:
            raise ConfigError(f"invalid model registry {path}: group {name!r} names unknown models {unknown}")
        for member in group.members:
            if member in member_of and member_of[member] != name:
                raise ConfigError(
                    f"invalid model registry {path}: model {member!r} is in groups {member_of[member]!r} "
                    f"and {name!r}; a model belongs to one group at most"
                )
            member_of[member] = name

    aliases = _alias_table(path, catalog)
    if enabled:
        enabled = tuple(aliases.get(s, s) for s in enabled)
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
    specs = {
        name: g.model_copy(update={"members": tuple(m for m in g.members if m in models)})
        for name, g in parsed.groups.items()
    }
    defaults: dict[Modality, str] = {}
    configured: dict[Modality, str] = {}
    wanted_defaults: tuple[tuple[Modality, str | None], ...] = (("asr", default_asr), ("tts", default_tts))
    for kind, wanted in wanted_defaults:
        slug = _pick_default(models, kind, wanted)
        if slug is not None:
            defaults[kind] = slug
        if wanted:
            configured[kind] = wanted
    return Registry(
        path=path,
        models=models,
        groups={k: v for k, v in groups.items() if len(v) > 1},
        aliases={alias: slug for alias, slug in aliases.items() if slug in models},
        orphan_aliases={alias: catalog[slug].kind for alias, slug in aliases.items() if slug not in models},
        defaults=defaults,
        configured=configured,
        shipped=is_shipped_file(path),
        installed=installed,
        group_specs={k: g for k, g in specs.items() if g.members},
        start_port=parsed.start_port,
    )


def _alias_table(path: Path, catalog: dict[str, ModelSpec]) -> dict[str, str]:
    """alias -> slug; an alias used twice or equal to a slug is refused (the request would be ambiguous)."""
    table: dict[str, str] = {}
    for slug, spec in catalog.items():
        for alias in spec.aliases:
            if alias in catalog:
                raise ConfigError(
                    f"invalid model registry {path}: alias {alias!r} of {slug!r} is also a model"
                )
            if alias in table and table[alias] != slug:
                raise ConfigError(
                    f"invalid model registry {path}: alias {alias!r} is given to both "
                    f"{table[alias]!r} and {slug!r}"
                )
            table[alias] = slug
    return table
