from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

HEAVY = (
    "torch",
    "ctranslate2",
    "faster_whisper",
    "onnxruntime",
    "kokoro",
    "misaki",
    "spacy",
    "transformers",
    "pocketsphinx",
)


def test_app_starts_without_importing_engine_libraries(tmp_path: object) -> None:
    """Engines import their heavy libraries in load(): building and starting the app imports none."""
    code = f"""
import sys, asyncio
from talkies.settings import load_settings
from talkies.api.app import create_app
app = create_app(load_settings(models_file={str(REPO_ROOT / "models.json")!r}, data_dir={str(tmp_path)!r}))
async def main():
    async with app.router.lifespan_context(app):
        pass
asyncio.run(main())
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
