"""Staging costs: streamed atomic PUT vs buffering the body, and a URL download's miss vs cache hit.

    python bench/files_staging.py [--mib 64 256] [--repeats 3]

Upload: `FileStore.put` fed 64 KiB chunks (what `PUT /v1/files` does with `request.stream()`) against the
naive handler that joins the whole body in memory and then writes it. Peak Python allocations are measured
with tracemalloc, so "memory flat" is a figure, not a claim. Download: a file served by a local http.server,
fetched through `Downloader.fetch` once (miss: resolve, check, stream to disk) and again (hit). Medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

from talkies.services.downloads import Downloader
from talkies.services.files import FileStore

CHUNK = 64 * 1024


async def body(total: int) -> AsyncIterator[bytes]:
    block = b"\x5a" * CHUNK
    for _ in range(total // CHUNK):
        yield block


async def streamed_put(store: FileStore, total: int) -> None:
    await store.put("bench/clip.bin", body(total))


async def buffered_put(store: FileStore, total: int) -> None:
    data = b"".join([chunk async for chunk in body(total)])
    await anyio.to_thread.run_sync(store.put_bytes_sync, "bench/clip.bin", data)


def measure(fn: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, float]:
    """(median seconds untraced, peak traced MiB from one more traced run)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        anyio.run(fn)
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    anyio.run(fn)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), peak


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "files", max_upload_bytes=2**40)
        print(
            f"{'upload':<10}{'MiB':>6}{'streamed s':>12}{'MiB/s':>8}{'peak MiB':>10}"
            f"{'buffered s':>12}{'peak MiB':>10}"
        )
        for mib in args.mib:
            total = mib * 2**20
            s_time, s_peak = measure(partial(streamed_put, store, total), args.repeats)
            b_time, b_peak = measure(partial(buffered_put, store, total), args.repeats)
            print(
                f"{'PUT':<10}{mib:>6}{s_time:>12.3f}{mib / s_time:>8.0f}{s_peak:>10.1f}"
                f"{b_time:>12.3f}{b_peak:>10.1f}"
            )

        served = Path(tmp) / "served"
        served.mkdir()
        mib = args.mib[0]
        (served / "clip.bin").write_bytes(b"\x5a" * (mib * 2**20))
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.bin"
        misses, hits = [], []
        for i in range(args.repeats):
            downloader = Downloader(store, max_bytes=2**40)
            target = f"{url}?n={i}"
            started = time.perf_counter()
            anyio.run(downloader.fetch, target)
            misses.append(time.perf_counter() - started)
            started = time.perf_counter()
            anyio.run(downloader.fetch, target)
            hits.append(time.perf_counter() - started)
        server.shutdown()
        server.server_close()
        miss, hit = statistics.median(misses), statistics.median(hits)
        print(
            f"download {mib} MiB from loopback: miss {miss:.3f} s ({mib / miss:.0f} MiB/s), "
            f"hit {hit * 1000:.2f} ms ({miss / hit:.0f}x faster)"
        )


if __name__ == "__main__":
    main()
