"""talkies.logs: TALKIES_LOG_LEVEL holds in a process whose root logger nobody configured (a Ray Serve
replica), even after the MCP SDK, which installs rich's console handler at INFO when its server is built
and nothing was configured before it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

CODE = """
import logging, sys
from talkies.logs import configure_logging
from talkies.settings import load_settings
from talkies.api.app import create_app
settings = load_settings(models_file={models!r}, data_dir={data!r}, log_level="warning")
if {configure}:
    configure_logging(settings.log_level)  # what the Ray replicas do first
create_app(settings)  # builds the MCP server
root = logging.getLogger()
print(",".join(type(h).__name__ for h in root.handlers))
print(logging.getLevelName(logging.getLogger("talkies.access").getEffectiveLevel()))
"""


def _run(tmp_path: Path, configure: bool) -> list[str]:
    code = CODE.format(models=str(REPO_ROOT / "models-cpu.json"), data=str(tmp_path), configure=configure)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_configured_first_the_log_level_and_a_plain_handler_hold(tmp_path: Path) -> None:
    assert _run(tmp_path, configure=True) == ["StreamHandler", "WARNING"]


def test_unconfigured_the_mcp_sdk_would_choose(tmp_path: Path) -> None:
    """What the replicas did before they configured logging themselves: rich at INFO."""
    assert _run(tmp_path, configure=False) == ["RichHandler", "INFO"]
