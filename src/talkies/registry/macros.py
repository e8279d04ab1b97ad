"""llama-swap's macros, expanded in a registry before it is validated.

The rules are llama-swap's (`internal/config/macros.go`):

- `${env.NAME}` reads the environment; an unset variable stops start-up. In a YAML file it is replaced
  in the text before parsing (`expand_env_text`), elsewhere in every string value (`expand_env_tree`).
- User macros: a top-level `macros:` map and a per-model one (the model's wins on a name clash). Names
  match `^[a-zA-Z0-9_-]+$`, are under 64 characters and are not `PID`, `PORT` or `MODEL_ID`; values are
  scalars. A macro may use macros declared before it (expansion runs from the last declared to the
  first). A string that is exactly `${name}` takes the macro's value with its type (a number stays one).
- `${MODEL_ID}` is the model's key. `${PORT}` is left for the engine, which picks a free port when the
  child starts; it may appear in `proxy` only if `cmd` uses it too. `${PID}` is allowed in `cmdStop` only.
- `#` comment lines are removed from a string `cmd` / `cmdStop` before anything is expanded, so a macro
  in a comment never becomes part of a command.
- Anything like `${name}` left over after expansion is an unknown macro and stops start-up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from talkies.errors import ConfigError
from talkies.registry.schema import DEFAULT_PROXY

MACRO_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
MACRO_USE = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")
ENV_USE = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")
RESERVED = frozenset({"PID", "PORT", "MODEL_ID"})
RUNTIME_FIELDS = ("cmd", "cmdStop", "proxy", "env", "checkEndpoint")
"""Where `${PORT}` may stay unexpanded (the engine fills it in when the child starts)."""

Macros = list[tuple[str, object]]


def strip_comment_lines(command: str) -> str:
    """Drop lines whose first non-blank character is `#`."""
    return "\n".join(line for line in command.split("\n") if not line.strip().startswith("#"))


def expand_env_text(text: str, environ: Mapping[str, str] | None = None, *, scan: str | None = None) -> str:
    """Replace `${env.NAME}` in `text` (found in `scan`, e.g. the text without YAML comments)."""
    env = os.environ if environ is None else environ
    for match in ENV_USE.finditer(text if scan is None else scan):
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"environment variable {name!r} is not set (used as ${{env.{name}}})")
        value = env[name]
        if any(c in value for c in "\n\r\x00"):
            raise ConfigError(f"environment variable {name!r} holds a newline or NUL; not usable in a macro")
        text = text.replace(match.group(0), value.replace("\\", "\\\\").replace('"', '\\"'))
    return text


def expand_env_tree(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """`${env.NAME}` replaced in every string of a parsed registry (JSON files)."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"environment variable {name!r} is not set (used as ${{env.{name}}})")
            return env[name]

        return ENV_USE.sub(one, value)
    if isinstance(value, dict):
        return {k: expand_env_tree(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env_tree(v, env) for v in value]
    return value


def _declared(raw: object, where: str) -> Macros:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'macros' must be a mapping of name to value")
    macros: Macros = []
    for name, value in raw.items():
        name = str(name)
        if len(name) >= 64:
            raise ConfigError(f"{where}: macro name {name!r} is longer than 63 characters")
        if not MACRO_NAME.fullmatch(name):
            raise ConfigError(f"{where}: macro name {name!r} must match ^[a-zA-Z0-9_-]+$")
        if name in RESERVED:
            raise ConfigError(f"{where}: macro name {name!r} is reserved (PID, PORT, MODEL_ID)")
        if isinstance(value, str):
            if f"${{{name}}}" in value:
                raise ConfigError(f"{where}: macro {name!r} refers to itself")
        elif not isinstance(value, int | float | bool):
            raise ConfigError(f"{where}: macro {name!r} must be a string, number or bool")
        macros.append((name, value))
    return macros


def _substitute(value: Any, name: str, replacement: object) -> Any:
    slug = f"${{{name}}}"
    if isinstance(value, str):
        if value == slug:
            return replacement
        return value.replace(slug, _text(replacement)) if slug in value else value
    if isinstance(value, dict):
        return {k: _substitute(v, name, replacement) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, name, replacement) for v in value]
    return value


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as Go's %v prints it
    return str(value)


def _apply(value: Any, macros: Macros) -> Any:
    for name, replacement in reversed(macros):
        value = _substitute(value, name, replacement)
    return value


def _merged(model_id: str, global_macros: Macros, own: Macros) -> Macros:
    merged: Macros = [("MODEL_ID", model_id), *global_macros]
    for name, value in own:
        for i, (existing, _) in enumerate(merged):
            if existing == name:
                merged[i] = (name, value)
                break
        else:
            merged.append((name, value))
    return merged


def expand_macros(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Expand user macros and `${MODEL_ID}` in a parsed registry (its `macros` keys removed)."""
    raw = dict(raw)
    global_macros = _declared(raw.pop("macros", None), source)
    models = raw.get("models")
    if not isinstance(models, dict):
        return raw
    for key, value in raw.items():
        if key != "models":
            raw[key] = _apply(value, global_macros)
    expanded: dict[str, Any] = {}
    for model_id, entry in models.items():
        if not isinstance(entry, dict):
            expanded[model_id] = entry
            continue
        where = f"{source}: model {model_id!r}"
        entry = dict(entry)
        own = _declared(entry.pop("macros", None), where)
        for name in ("cmd", "cmdStop"):
            if isinstance(entry.get(name), str):
                entry[name] = strip_comment_lines(entry[name])
        if entry.get("executor") == "process" and entry.get("proxy") is None:
            entry["proxy"] = DEFAULT_PROXY
        entry = _apply(entry, _merged(str(model_id), global_macros, own))
        _check_uses(entry, where)
        expanded[model_id] = entry
    raw["models"] = expanded
    return raw


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _check_uses(entry: dict[str, Any], where: str) -> None:
    cmd_has_port = any("${PORT}" in s for s in _strings(entry.get("cmd")))
    has_cmd = bool(entry.get("cmd"))  # without one the schema says what is missing
    if has_cmd and not cmd_has_port and any("${PORT}" in s for s in _strings(entry.get("proxy"))):
        raise ConfigError(
            f"{where}: proxy uses ${{PORT}} but cmd does not; ${{PORT}} is only set when cmd uses it"
        )
    for field, value in entry.items():
        for text in _strings(value):
            for match in MACRO_USE.finditer(text):
                name = match.group(1)
                if name == "PID" and field == "cmdStop":
                    continue
                if name == "PORT" and field in RUNTIME_FIELDS and (cmd_has_port or not has_cmd):
                    continue
                if name == "PORT":
                    raise ConfigError(f"{where}: ${{PORT}} in {field} but cmd does not use ${{PORT}}")
                raise ConfigError(f"{where}: unknown macro ${{{name}}} in {field}")
            for match in ENV_USE.finditer(text):
                raise ConfigError(f"{where}: environment variable {match.group(1)!r} is not set")
