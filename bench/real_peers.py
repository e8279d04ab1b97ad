"""talkies vs the OpenAI-compatible faster-whisper servers a user would pick instead, on the same Whisper base
weights and files, side by side in one run.

    SPEACHES_SRC=/path/to/speaches-checkout scripts/peer-venvs.sh        # once; builds ~/.cache/talkies-peers
    python bench/real_peers.py --rounds 5

Peers (each from its own virtual environment, nothing of them committed or installed into .venv; a peer
whose venv is absent is skipped with the command that builds it):

    faster-whisper-server   PyPI's faster-whisper-server 0.0.3, a FastAPI app around `WhisperModel`,
                            configured by YAML: the model directory, int8, --threads CPU threads,
                            beam 5, language en; `transcribe` runs on its event loop
    speaches                github.com/speaches-ai/speaches at the commit its checkout holds (printed),
                            installed from its uv.lock; its models come from a Hugging Face cache, so a
                            cache is laid out in a temporary directory whose snapshot files are links to
                            the same Whisper base files (HF_HUB_OFFLINE=1); WHISPER__COMPUTE_TYPE=int8,
                            WHISPER__CPU_THREADS=--threads, run from its checkout (it reads
                            model_aliases.json and realtime-console/dist relative to the working directory)

talkies runs as `python -m talkies serve` (engines in worker processes, TALKIES_CPU_THREADS=--threads).
Every side: multipart WAV to /v1/audio/transcriptions, response_format json, language en, temperature 0,
beam 5 (faster-whisper's default, which all three keep), segment timestamps decoded (speaches' default is
`without_timestamps=true`; the bench sends false so it decodes what the others do). How each cuts a long
file is its own design and part of what is compared: talkies runs its Silero VAD past 30 s and decodes
the regions batched; faster-whisper-server decodes 30 s windows one after the other without VAD;
speaches runs its Silero VAD on every file and decodes with `BatchedInferencePipeline`.

Clips: 5 s and 60 s of espeak-ng sentences with pauses (tests/fixtures/speech.py). Per round, in an order
that rotates so the load falls on every server alike: latency at concurrency 1 on each clip, then
throughput at 4 (4 clients, one 5 s request each, all at once). Figures: medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench._harness import free_port, server_process, wav_bytes  # noqa: E402
from bench.real_models import WHISPER, talkies_server  # noqa: E402
from tests.fixtures.real_models import fetch_real_models  # noqa: E402
from tests.fixtures.speech import long_speech, speech_clip  # noqa: E402

PEERS_DIR = Path(os.environ.get("PEERS_DIR", Path.home() / ".cache" / "talkies-peers"))
SETUP = "SPEACHES_SRC=/path/to/speaches scripts/peer-venvs.sh"
HF_REPO = "Systran/faster-whisper-base"
FWS_CONFIG = """\
models:
  - name: whisper-1
    path: {path}
    batch_size: 1
    model_options: {{device: cpu, compute_type: int8, cpu_threads: {threads}}}
    transcribe_options: {{beam_size: 5, language: en}}
"""
MODEL_CARD = """\
---
library_name: ctranslate2
pipeline_tag: automatic-speech-recognition
language: [en]
tags: [audio, automatic-speech-recognition]
license: mit
---
# faster-whisper-base (the files of the PyPI data wheels, see scripts/fetch-real-models.sh)
"""
BASE_FORM = {"language": "en", "temperature": "0", "response_format": "json"}


def health_ok(url: str) -> bool:
    import httpx

    return httpx.get(f"{url}/health", timeout=2).status_code == 200


@contextmanager
def fws_server(python: Path, whisper: Path, threads: int, tmp: Path) -> Iterator[str]:
    config = tmp / "fws.yaml"
    config.write_text(FWS_CONFIG.format(path=whisper, threads=threads))
    port = free_port()
    argv = [str(python), "-m", "faster_whisper_server", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with server_process(argv, port, ready=health_ok, timeout=300) as url:
        yield url


def hf_cache(whisper: Path, tmp: Path) -> Path:
    """A Hugging Face hub cache holding `HF_REPO` whose snapshot files link to the fetched files."""
    hub = tmp / "hf" / "hub"
    repo = hub / f"models--{HF_REPO.replace('/', '--')}"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"):
        (snapshot / name).symlink_to(whisper / name)
    (snapshot / "README.md").write_text(MODEL_CARD)
    return hub


@contextmanager
def speaches_server(python: Path, source: Path, whisper: Path, threads: int, tmp: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKIES_", "PYTHON"))}
    env.update(
        HF_HUB_CACHE=str(hf_cache(whisper, tmp)), HF_HUB_OFFLINE="1", ENABLE_UI="false",
        LOG_LEVEL="warning", WHISPER__INFERENCE_DEVICE="cpu", WHISPER__COMPUTE_TYPE="int8",
        WHISPER__CPU_THREADS=str(threads), STT_MODEL_TTL="-1",
    )  # fmt: skip
    argv = [str(python), "-m", "uvicorn", "--factory", "speaches.main:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    with server_process(argv, port, env=env, cwd=source, ready=health_ok, timeout=600) as url:
        yield url


def speaches_source() -> Path | None:
    given = os.environ.get("SPEACHES_SRC")
    source = Path(given) if given else PEERS_DIR / "speaches-src"
    return source if (source / "model_aliases.json").is_file() else None


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long", type=float, default=60.0, help="seconds of the long clip (0: none)")
    args = parser.parse_args()
    models = fetch_real_models()
    whisper = models / "whisper-base"
    fws_python = PEERS_DIR / "fws" / "bin" / "python"
    speaches_python = PEERS_DIR / "speaches" / "bin" / "python"
    source = speaches_source()
    clips = {"5 s": wav_bytes(speech_clip(5.0))}
    if args.long:
        clips[f"{args.long:g} s"] = wav_bytes(long_speech(args.long).audio)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sides: dict[str, tuple[str, dict[str, str]]] = {}
        url = stack.enter_context(talkies_server(models, args.threads))
        sides["talkies"] = (url, {"model": WHISPER})
        if fws_python.exists():
            url = stack.enter_context(fws_server(fws_python, whisper, args.threads, tmp))
            sides["faster-whisper-server 0.0.3"] = (url, {"model_name": "whisper-1"})
        else:
            print(f"skipped faster-whisper-server: no {fws_python} (build it: {SETUP})")
        if speaches_python.exists() and source is not None:
            commit = (source / "COMMIT").read_text().strip() if (source / "COMMIT").exists() else "?"
            url = stack.enter_context(speaches_server(speaches_python, source, whisper, args.threads, tmp))
            sides[f"speaches {commit[:7]}"] = (url, {"model": HF_REPO, "without_timestamps": "false"})
        else:
            print(f"skipped speaches: no {speaches_python} or checkout (build it: {SETUP})")
        client = stack.enter_context(httpx.Client(timeout=3600))
        run(args, client, sides, clips)


def run(
    args: argparse.Namespace,
    client: object,
    sides: dict[str, tuple[str, dict[str, str]]],
    clips: dict[str, bytes],
) -> None:
    import httpx

    assert isinstance(client, httpx.Client)
    texts: dict[tuple[str, str], str] = {}

    def one(name: str, clip: str) -> float:
        url, form = sides[name]
        start = time.perf_counter()
        answer = client.post(f"{url}/v1/audio/transcriptions", data={**BASE_FORM, **form},
                             files={"file": ("clip.wav", clips[clip], "audio/wav")})  # fmt: skip
        answer.raise_for_status()
        elapsed = time.perf_counter() - start
        texts.setdefault((name, clip), json.loads(answer.text)["text"])
        return elapsed

    def four(name: str) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: one(name, "5 s"), range(4)))
        return 4 / (time.perf_counter() - start)

    for name in sides:  # load the models (and speaches' VAD), untimed
        for clip in clips:
            print(f"warm-up {name} {clip}: {one(name, clip):.2f} s", flush=True)
    latency: dict[tuple[str, str], list[float]] = {(n, c): [] for n in sides for c in clips}
    throughput: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        measures: list[tuple[str, Callable[[], None]]] = []
        for clip in clips:
            for name in order:
                measures.append((f"{name} {clip}", lambda n=name, c=clip: latency[(n, c)].append(one(n, c))))
        for name in order:
            measures.append((f"{name} c=4", lambda n=name: throughput[n].append(four(n))))
        for _label, measure in measures:
            measure()
        figures = [f"{n}: " + ", ".join(f"{latency[(n, c)][-1]:.2f} s" for c in clips)
                   + f", {throughput[n][-1]:.3f} req/s" for n in names]  # fmt: skip
        print(f"  round {round_} ({' -> '.join(order)}): " + "; ".join(figures), flush=True)
    print("\ntexts (first answer of each):")
    for (name, clip), text in texts.items():
        print(f"  {name} {clip}: {text.strip()!r}")
    print(f"\nbeam 5, temperature 0, en, int8, {args.threads} threads each, {args.rounds} rounds, medians")
    header = " | ".join(f"latency {c}, c=1" for c in clips)
    print(f"| server | {header} | throughput 5 s, c=4 |\n|---|" + "---|" * len(clips) + "---|")
    for name in names:
        cells = " | ".join(f"{statistics.median(latency[(name, c)]):.3f} s" for c in clips)
        print(f"| {name} | {cells} | {statistics.median(throughput[name]):.3f} req/s |")
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"\nload at the end: {load}")


if __name__ == "__main__":
    main()
