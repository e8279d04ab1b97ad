from __future__ import annotations

from talkies.settings import Settings
from tests.conftest import REPO_ROOT


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [
        f"TALKIES_{name.upper()}"
        for name in Settings.model_fields
        if f"`TALKIES_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_readme_gives_the_two_commands_ci_runs() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make run" in readme
    assert "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
