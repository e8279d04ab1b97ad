"""The environment an external server starts with: an allow-list, never talkies' own environment.

talkies' environment holds its secrets (`TALKIES_AUTH_TOKEN`, and whatever else the operator exported
for it); a child that prints its environment, or logs a URL with a key in it, would hand them to whoever
reads its output. So a child gets only:

- `BASE_NAMES` / `BASE_PREFIXES`: what any program needs to run (PATH, HOME, locale, temp dir) and the
  CUDA / Hugging Face variables the docs name (which GPU, where the hub cache is, offline mode);
- the names in `TALKIES_CHILD_ENV` (names, or `PREFIX*`), for what the operator wants passed through;
- the registry entry's own `env` list, as written (macros expanded).

The variables of talkies' secret settings (`SECRET_VARIABLES`) are never passed through, whatever
`TALKIES_CHILD_ENV` says (settings refuses such a name at start-up anyway).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping

from talkies.settings import SECRET_VARIABLES

BASE_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "XDG_DATA_HOME",
        "XDG_CACHE_HOME",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_ENDPOINT",
    }
)
"""Passed to every child when set in talkies' environment."""
BASE_PREFIXES = ("LC_",)
"""Locale categories (LC_ALL, LC_CTYPE, ...)."""


def passes(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether talkies' variable `name` is handed to a child (`extra`: TALKIES_CHILD_ENV's entries)."""
    if name.upper() in SECRET_VARIABLES:
        return False
    if name in BASE_NAMES or name.startswith(BASE_PREFIXES):
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in extra)


def child_environment(
    entry_env: Iterable[tuple[str, str]],
    extra: Iterable[str] = (),
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The child's environment: the allowed part of `parent` (talkies' own by default), then the entry's
    `env` pairs on top."""
    patterns = tuple(extra)
    source = os.environ if parent is None else parent
    env = {name: value for name, value in source.items() if passes(name, patterns)}
    for name, value in entry_env:
        env[name] = value
    return env
