"""talkies vs a peer OpenAI-compatible faster-whisper server, on the same Whisper base weights and files.

    python -m venv /tmp/fws && /tmp/fws/bin/pip install faster-whisper-server==0.0.3   # not a dependency
    python bench/real_peers.py --peer-python /tmp/fws/bin/python --rounds 8

The peer is PyPI's `faster-whisper-server` (0.0.3: a FastAPI app around `WhisperModel`), run from its own
virtual environment (nothing of it is committed or installed here), configured with the same model
directory, compute type (int8), threads and decoding options (beam 5, temperature 0, language en) as
talkies. Same machine, same 5 s WAV, rounds interleaved (the two servers alternate which goes first):

    latency at concurrency 1   median seconds of one request
    throughput at 4            4 clients x 2 requests each, all at once: requests per second

Both servers hold one decoder for the model: talkies queues the requests in its pool (max_concurrency 1,
the default), the peer runs `transcribe` on its event loop, so requests take turns there too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench._harness import free_port, server_process, wav_bytes  # noqa: E402
from bench.real_models import WHISPER, talkies_server  # noqa: E402
from tests.fixtures.real_models import fetch_real_models  # noqa: E402
from tests.fixtures.speech import speech_clip  # noqa: E402

PEER_CONFIG = """\
models:
  - name: whisper-1
    path: {path}
    batch_size: 1
    model_options: {{device: cpu, compute_type: int8, cpu_threads: {threads}}}
    transcribe_options: {{beam_size: 5, language: en}}
"""


def peer_ready(url: str) -> bool:
    import httpx

    return httpx.get(f"{url}/health", timeout=2).status_code == 200


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer-python", help="python of a venv with faster-whisper-server (else: skipped)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.peer_python:
        print("skipped: no --peer-python (a venv with faster-whisper-server==0.0.3; see the docstring)")
        return
    models = fetch_real_models()
    data = wav_bytes(speech_clip(5.0))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "fws.yaml"
        config.write_text(PEER_CONFIG.format(path=models / "whisper-base", threads=args.threads))
        port = free_port()
        peer_argv = [args.peer_python, "-m", "faster_whisper_server", "--config", str(config),
                     "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with (
            talkies_server(models, args.threads) as ours_url,
            server_process(peer_argv, port, ready=peer_ready, timeout=300) as peer_url,
            httpx.Client(timeout=600) as client,
        ):
            sides = {
                "talkies": (f"{ours_url}/v1/audio/transcriptions", {"model": WHISPER}),
                "faster-whisper-server": (f"{peer_url}/v1/audio/transcriptions", {"model_name": "whisper-1"}),
            }

            def one(name: str) -> float:
                url, form = sides[name]
                start = time.perf_counter()
                answer = client.post(url, data={**form, "language": "en", "temperature": "0"},
                                     files={"file": ("clip.wav", data, "audio/wav")})  # fmt: skip
                answer.raise_for_status()
                return time.perf_counter() - start

            def four(name: str) -> float:
                start = time.perf_counter()
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda _: one(name), range(8)))
                return 8 / (time.perf_counter() - start)

            for name in sides:  # load both models, untimed
                print(f"warm-up {name}: {one(name):.2f} s, text identical check below", flush=True)
            latency: dict[str, list[float]] = {name: [] for name in sides}
            throughput: dict[str, list[float]] = {name: [] for name in sides}
            names = list(sides)
            for round_ in range(args.rounds):
                order = names if round_ % 2 == 0 else names[::-1]
                for name in order:
                    latency[name].append(one(name))
                for name in order:
                    throughput[name].append(four(name))
                figures = [f"{n} {latency[n][-1]:.2f} s / {throughput[n][-1]:.2f} req/s" for n in names]
                print(f"  round {round_}: " + ", ".join(figures), flush=True)
    print(f"\n5 s clip, beam 5, temperature 0, int8, {args.threads} threads, {args.rounds} rounds")
    print("| server | latency c=1 (median) | throughput c=4 (median) |\n|---|---|---|")
    for name in names:
        print(f"| {name} | {statistics.median(latency[name]):.3f} s | "
              f"{statistics.median(throughput[name]):.3f} req/s |")  # fmt: skip


if __name__ == "__main__":
    main()
