"""A llama-swap `config.yaml` read as a talkies registry (`TALKIES_MODELS_FILE=config.yaml`).

What is read: `models:` (each a `process` model unless it names another executor), `macros:`, `groups:`
at the top level or under `routing.router.settings` (llama-swap's two places; never both),
`healthCheckTimeout`, `startPort`, `globalTTL` and `unloadTimeout`. Every other key, at the top level or in
a model, stops start-up with a message naming it: a setting talkies would not honour is never accepted.

talkies serves speech only, so a model needs `modality: asr` or `modality: tts` (llama-swap ignores keys it
does not know, so the same file still works there). A model without one (an LLM, an embedder, ...) is
left out with a warning naming it, and dropped from its group. An entry may name a built-in `executor:`
instead (its modality is then implied), so one file can mix both. `${env.NAME}` is replaced in the text before
parsing, as llama-swap does; the other macros are expanded by `talkies.registry.macros` like any registry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from talkies.errors import ConfigError
from talkies.registry.macros import expand_env_text
from talkies.registry.schema import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_GROUP = "(default)"
TOP_LEVEL_KEYS = frozenset(
    {"models", "macros", "groups", "routing", "healthCheckTimeout", "startPort", "globalTTL", "unloadTimeout"}
)
LLAMA_SWAP_MODEL_KEYS = frozenset(
    {
        "cmd",
        "cmdStop",
        "proxy",
        "aliases",
        "env",
        "checkEndpoint",
        "ttl",
        "unloadTimeout",
        "unlisted",
        "useModelName",
        "name",
        "description",
        "concurrencyLimit",
        "macros",
        "healthCheckTimeout",
    }
)
MODEL_KEYS = LLAMA_SWAP_MODEL_KEYS | {
    f.alias or name for name, f in ModelSpec.model_fields.items() if name != "slug"
}


def is_llamaswap_file(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def read_llamaswap(path: Path, text: str) -> dict[str, Any]:
    """The file as a raw registry mapping (macros not yet expanded), or ConfigError naming what is wrong."""
    try:
        scan = yaml.safe_dump(yaml.safe_load(text))  # comments gone: a macro in a comment is not needed
    except yaml.YAMLError:
        scan = text
    text = expand_env_text(text, scan=scan)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read llama-swap config {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"llama-swap config {path} is not a mapping with a 'models:' key")
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"llama-swap config {path}: talkies does not support {', '.join(unknown)} "
            f"(supported top-level keys: {', '.join(sorted(TOP_LEVEL_KEYS))}); remove them"
        )
    raw["groups"] = _groups(path, raw.pop("groups", None), raw.pop("routing", None))
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"llama-swap config {path}: 'models:' must map model ids to their settings")
    kept: dict[str, Any] = {}
    for model_id, entry in models.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"llama-swap config {path}: model {model_id!r} must be a mapping")
        unsupported = sorted(set(entry) - MODEL_KEYS)
        if unsupported:
            raise ConfigError(
                f"llama-swap config {path}: model {model_id!r} uses {', '.join(unsupported)}, "
                "which talkies does not support; remove them"
            )
        builtin = entry.get("executor", "process") != "process"  # its executor implies the modality
        if "modality" not in entry and not builtin:
            log.warning(
                "llama-swap config %s: model %r has no 'modality' (asr or tts); talkies serves speech "
                "models only, so it is left out. Add 'modality: asr' or 'modality: tts' to serve it.",
                path,
                model_id,
            )
            continue
        kept[str(model_id)] = {"executor": "process", **entry}
    if not kept:
        raise ConfigError(
            f"llama-swap config {path}: no model has a 'modality' (asr or tts); nothing to serve"
        )
    raw["models"] = kept
    groups: dict[str, Any] = {}
    for name, group in raw["groups"].items():
        members = [m for m in group.get("members") or () if m in kept]
        if members:
            groups[name] = {**group, "members": members}
    grouped = {m for g in groups.values() for m in g["members"]}
    ungrouped = [m for m in kept if m not in grouped]
    if ungrouped:  # llama-swap puts every model without a group in one swap + exclusive group
        groups.setdefault(
            DEFAULT_GROUP, {"swap": True, "exclusive": True, "persistent": False, "members": []}
        )
        groups[DEFAULT_GROUP]["members"] = [*groups[DEFAULT_GROUP]["members"], *ungrouped]
    raw["groups"] = groups
    return raw


def _groups(path: Path, top: object, routing: object) -> dict[str, Any]:
    """llama-swap's groups with its defaults made explicit (swap and exclusive true, persistent false)."""
    found: object = top
    if routing is not None:
        if not isinstance(routing, dict) or set(routing) - {"router"}:
            raise ConfigError(f"llama-swap config {path}: talkies reads only routing.router.settings.groups")
        router = routing.get("router") or {}
        if not isinstance(router, dict) or set(router) - {"use", "settings"}:
            raise ConfigError(f"llama-swap config {path}: talkies reads only routing.router.settings.groups")
        if router.get("use") not in (None, "", "group"):
            raise ConfigError(
                f"llama-swap config {path}: routing.router.use {router.get('use')!r} is not supported "
                "(talkies implements the 'group' router)"
            )
        settings = router.get("settings") or {}
        if not isinstance(settings, dict) or set(settings) - {"groups"}:
            raise ConfigError(f"llama-swap config {path}: talkies reads only routing.router.settings.groups")
        if settings.get("groups") and top:
            raise ConfigError(
                f"llama-swap config {path}: groups are given both at the top level and under "
                "routing.router.settings; keep one"
            )
        found = settings.get("groups") or top
    if not found:
        return {}
    if not isinstance(found, dict):
        raise ConfigError(f"llama-swap config {path}: 'groups' must map group names to settings")
    groups: dict[str, Any] = {}
    for name, group in found.items():
        if not isinstance(group, dict):
            raise ConfigError(f"llama-swap config {path}: group {name!r} must be a mapping")
        groups[str(name)] = {"swap": True, "exclusive": True, "persistent": False, **group}
    return groups
