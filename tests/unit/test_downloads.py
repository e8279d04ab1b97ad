"""URL downloads against a real local HTTP server: cache, de-duplication, limits, and the SSRF guard."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import threading
import time
import typing
from collections import Counter
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import httpcore
import pytest

from talkies.errors import DownloadError, InvalidPathError, StagedFileNotFoundError
from talkies.netpolicy import UrlAllowlist
from talkies.services.downloads import Downloader, cache_name, refusal_reason, using_file_path
from talkies.services.files import FileStore

pytestmark = pytest.mark.anyio

CLIP = bytes(range(256)) * 40  # 10 KiB


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: typing.Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.hits[path] += 1
            self.server.hosts.append(self.headers.get("Host", ""))
        if path.startswith("/redirect/"):
            left = int(path.rsplit("/", 1)[1])
            target = "/clip.wav" if left <= 1 else f"/redirect/{left - 1}"  # N hops in all
            self._send(302, b"", {"Location": target})
        elif path == "/to-loopback":
            self._send(302, b"", {"Location": f"http://127.0.0.1:{self.server.server_address[1]}/clip.wav"})
        elif path == "/to-metadata":
            self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "/stall":
            time.sleep(1.5)
            self._send(200, CLIP)
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(1200):  # a byte every 50 ms, for at most a minute
                try:
                    self.wfile.write(b"t")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
        elif path == "/slow.wav":
            time.sleep(0.4)
            self._send(200, CLIP)
        elif path in ("/clip.wav", "/blob"):
            self._send(200, CLIP if path == "/clip.wav" else b"b" * 1000)
        elif path == "/big-unsized":
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"z" * 16384)
        elif path == "/big-sized":
            self._send(200, b"z" * 300_000)
        else:
            self._send(404, b"missing")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records every address the downloader dials; only loopback is really connected (no internet here)."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.dialled: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.dialled.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"test network: {host} unreachable")
        return await self.inner.connect_tcp(host, port, timeout=timeout)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "files", max_upload_bytes=1000)


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


LOOPBACK_TRUSTED = UrlAllowlist.parse(["127.0.0.0/8"])


def _downloader(store: FileStore, backend: RecordingBackend, **kwargs: typing.Any) -> Downloader:
    """A downloader with the guard on (the default) and loopback, where the test servers live, trusted."""
    kwargs.setdefault("max_bytes", 100_000)
    kwargs.setdefault("allowlist", LOOPBACK_TRUSTED)
    kwargs.setdefault("read_timeout", 5)
    return Downloader(store, network_backend=backend, connect_timeout=2, **kwargs)


def _download_files(store: FileStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir())


async def test_downloads_once_then_hits_the_cache(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend)
    url = f"{server.base}/clip.wav"
    first = await downloads.fetch(url)
    second = await downloads.fetch(url)
    assert first == second == store.root / cache_name(url)
    assert first.read_bytes() == CLIP
    assert server.hits["/clip.wav"] == 1
    assert cache_name(url).endswith("-clip.wav")
    assert len(cache_name(url).split("-")[0]) == 16
    assert [f["path"] for f in store.list_sync()] == [cache_name(url)]


async def test_concurrent_requests_fetch_once(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend)
    url = f"{server.base}/slow.wav"
    results: list[Path] = []

    async def one() -> None:
        results.append(await downloads.fetch(url))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert server.hits["/slow.wav"] == 1
    assert len(results) == 5
    assert len(set(results)) == 1


async def test_redirects_followed_up_to_five(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend)
    path = await downloads.fetch(f"{server.base}/redirect/5")
    assert path.read_bytes() == CLIP
    with pytest.raises(DownloadError, match="too many redirects"):
        await downloads.fetch(f"{server.base}/redirect/6")
    assert server.hits["/clip.wav"] == 1  # only the 5-hop chain reached the file


async def test_size_cap_removes_partial_file(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    # The downloader writes once 64 KiB are buffered and a network read brings at most 64 KiB, so a cap of
    # 200 000 bytes always lets one write reach the disk first (with 100 000 it depended on how the
    # reads happened to fall, and a fresh-clone CI run once saw nothing written).
    downloads = _downloader(store, backend, max_bytes=200_000)
    written: list[int] = []
    real_begin = store.begin_write

    def spying_begin(path: str) -> typing.Any:
        writer = real_begin(path)
        real_write = writer.write
        writer.write = lambda data: (written.append(len(data)), real_write(data))[1]  # type: ignore[method-assign]
        return writer

    store.begin_write = spying_begin  # type: ignore[method-assign]
    with pytest.raises(DownloadError, match="TALKIES_MAX_DOWNLOAD_BYTES"):
        await downloads.fetch(f"{server.base}/big-unsized")
    assert sum(written) > 0  # a partial file was on disk before the cap struck
    with pytest.raises(DownloadError, match="TALKIES_MAX_DOWNLOAD_BYTES"):
        await downloads.fetch(f"{server.base}/big-sized")
    assert server.hits["/big-unsized"] == 1
    assert _download_files(store) == []


async def test_read_timeout(server: _Server, store: FileStore, backend: RecordingBackend) -> None:
    downloads = _downloader(store, backend, read_timeout=0.3)
    with pytest.raises(DownloadError, match="ReadTimeout"):
        await downloads.fetch(f"{server.base}/stall")
    assert _download_files(store) == []


async def test_http_errors_and_bad_urls(server: _Server, store: FileStore, backend: RecordingBackend) -> None:
    downloads = _downloader(store, backend)
    with pytest.raises(DownloadError, match="HTTP 404"):
        await downloads.fetch(f"{server.base}/nope")
    for url in ("ftp://example.com/a.wav", "file:///etc/passwd", "http:///a.wav"):
        with pytest.raises(DownloadError):
            await downloads.fetch(url)
    with pytest.raises(DownloadError, match="resolve"):
        await Downloader(store, max_bytes=10, connect_timeout=2).fetch("http://no-such-host.invalid/a.wav")


async def test_private_address_refused_with_guard_on(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend, block_private=True, allowlist=None)
    with pytest.raises(DownloadError, match="not a public address"):
        await downloads.fetch(f"{server.base}/clip.wav")
    assert backend.dialled == []
    assert sum(server.hits.values()) == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fe80::1]/",
    ],
)
async def test_metadata_refused_even_with_guard_off(
    store: FileStore, backend: RecordingBackend, url: str
) -> None:
    downloads = _downloader(store, backend, block_private=False)
    with pytest.raises(DownloadError, match="link-local or cloud-metadata"):
        await downloads.fetch(url)
    assert backend.dialled == []  # refused before any connection


async def test_metadata_hostname_refused_with_guard_off(store: FileStore, backend: RecordingBackend) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    downloads = _downloader(store, backend, resolver=resolver)
    with pytest.raises(DownloadError, match="link-local or cloud-metadata"):
        await downloads.fetch("http://metadata.google.internal/computeMetadata/v1/")
    assert backend.dialled == []


async def test_every_redirect_hop_is_checked(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend, block_private=False)
    with pytest.raises(DownloadError, match=r"169\.254\.169\.254"):
        await downloads.fetch(f"{server.base}/to-metadata")
    assert server.hits["/to-metadata"] == 1
    assert backend.dialled == ["127.0.0.1"]


async def test_dns_rebinding_cannot_reach_loopback(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1"])
    calls: list[str] = []

    async def rebinding_resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return [next(answers)]

    downloads = _downloader(store, backend, allowlist=None, resolver=rebinding_resolver)
    with pytest.raises(DownloadError, match="could not fetch"):
        await downloads.fetch(f"http://rebind.example:{server.port}/clip.wav")
    assert calls == ["rebind.example"]  # resolved once
    assert backend.dialled == ["93.184.216.34"]  # dialled the checked address, not a fresh lookup
    assert sum(server.hits.values()) == 0


async def test_pinned_connection_keeps_the_hostname(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    downloads = _downloader(store, backend, resolver=resolver)
    path = await downloads.fetch(f"http://media.example:{server.port}/clip.wav")
    assert path.read_bytes() == CLIP
    assert server.hosts == [f"media.example:{server.port}"]


async def test_cache_is_bounded_least_recently_used_first(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend, cache_bytes=2500)
    one, two, three = (f"{server.base}/blob?id={i}" for i in (1, 2, 3))
    await downloads.fetch(one)
    await downloads.fetch(two)
    await downloads.fetch(one)  # a hit makes `one` the most recently used
    await downloads.fetch(three)
    assert _download_files(store) == sorted([cache_name(one), cache_name(three)])
    assert server.hits["/blob"] == 3
    await downloads.fetch(two)  # evicted, so fetched again
    assert server.hits["/blob"] == 4


def test_refusal_table() -> None:
    blocked_always = [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "100.100.100.200",
    ]
    private = [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "::1",
        "fc00::1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "::",
    ]
    for address in blocked_always:
        ip = ipaddress.ip_address(address)
        assert refusal_reason(ip, block_private=False) is not None, address
    for address in private:
        ip = ipaddress.ip_address(address)
        assert refusal_reason(ip, block_private=False) is None, address
        assert refusal_reason(ip, block_private=True) is not None, address
    assert refusal_reason(ipaddress.ip_address("93.184.216.34"), block_private=True) is None
    assert refusal_reason(ipaddress.ip_address("2606:2800:220:1::1"), block_private=True) is None


async def test_using_file_path(
    server: _Server, store: FileStore, backend: RecordingBackend, tmp_path: Path
) -> None:
    downloads = _downloader(FileStore(tmp_path / "url-cache", max_upload_bytes=1000), backend)
    store.put_bytes_sync("staged/clip.wav", b"RIFF")
    async with using_file_path("staged/clip.wav", files=store, downloads=downloads) as path:
        assert path == store.root / "staged" / "clip.wav"
    with pytest.raises(StagedFileNotFoundError):
        async with using_file_path("staged/missing.wav", files=store, downloads=downloads):
            pass
    with pytest.raises(InvalidPathError):
        async with using_file_path("../etc/passwd", files=store, downloads=downloads):
            pass
    url = f"{server.base}/clip.wav"
    async with using_file_path(url, files=store, downloads=downloads) as path:
        assert path.read_bytes() == CLIP


async def test_total_deadline_ends_a_trickling_download(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    """Each read gets a byte well within the per-read timeout; only the total deadline ends it."""
    downloads = _downloader(store, backend, read_timeout=30, total_timeout=1.0)
    with pytest.raises(DownloadError, match=r"did not finish within 1 s \(TALKIES_DOWNLOAD_TIMEOUT\)"):
        await downloads.fetch(f"{server.base}/trickle")
    assert server.hits["/trickle"] == 1
    assert _download_files(store) == []  # the partial body is gone
    assert downloads.fetches(f"{server.base}/trickle") == 0


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Server, Path, list[str]]]:
    """An HTTPS server on loopback with a self-signed certificate for media.example; records SNI names."""
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=media.example",
            "-addext",
            "subjectAltName=DNS:media.example",
        ],
        check=True,
        capture_output=True,
    )
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name) or None  # type: ignore[func-returns-value]
    srv = _Server()
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv, cert, names
    srv.shutdown()
    srv.server_close()
    thread.join(5)


async def test_https_to_a_pinned_address_keeps_sni_and_certificate_checks(
    tls_server: tuple[_Server, Path, list[str]], store: FileStore, backend: RecordingBackend
) -> None:
    srv, cert, names = tls_server

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    trusted = ssl.create_default_context(cafile=str(cert))
    downloads = _downloader(store, backend, resolver=resolver, ssl_context=trusted)
    path = await downloads.fetch(f"https://media.example:{srv.port}/clip.wav")
    assert path.read_bytes() == CLIP
    assert backend.dialled == ["127.0.0.1"]  # dialled the checked address...
    assert names == ["media.example"]  # ...while TLS spoke to the hostname
    assert srv.hosts[-1] == f"media.example:{srv.port}"

    # The certificate is still checked against the hostname: another name on the same address fails.
    with pytest.raises(DownloadError, match=r"(?i)certificate"):
        await downloads.fetch(f"https://other.example:{srv.port}/clip.wav")


async def test_default_guard_refuses_loopback_and_the_allowlist_opens_it(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    url = f"{server.base}/clip.wav"
    default = Downloader(store, max_bytes=100_000, network_backend=backend)  # nothing configured
    with pytest.raises(DownloadError, match="TALKIES_URL_ALLOWLIST"):
        await default.fetch(url)
    other = _downloader(store, backend, allowlist=UrlAllowlist.parse(["10.0.0.0/8", "nas.lan"]))
    with pytest.raises(DownloadError, match="not a public address"):
        await other.fetch(url)
    assert backend.dialled == []
    assert sum(server.hits.values()) == 0
    by_cidr = _downloader(store, backend, allowlist=UrlAllowlist.parse(["127.0.0.0/8"]))
    assert (await by_cidr.fetch(url)).read_bytes() == CLIP
    by_name = _downloader(store, backend, allowlist=UrlAllowlist.parse(["LocalHost"]))
    assert (await by_name.fetch(f"http://localhost:{server.port}/blob")).read_bytes() == b"b" * 1000


async def test_redirect_from_a_trusted_host_to_an_untrusted_private_address_is_refused(
    server: _Server, store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend, allowlist=UrlAllowlist.parse(["localhost"]))
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1 is not a public address"):
        await downloads.fetch(f"http://localhost:{server.port}/to-loopback")
    assert server.hits["/to-loopback"] == 1
    assert server.hits["/clip.wav"] == 0


async def test_the_allowlist_never_opens_link_local_or_metadata(
    store: FileStore, backend: RecordingBackend
) -> None:
    downloads = _downloader(store, backend, allowlist=UrlAllowlist.parse(["169.254.0.0/16", "fe80::/10"]))
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/"):
        with pytest.raises(DownloadError, match="link-local or cloud-metadata"):
            await downloads.fetch(url)
    assert backend.dialled == []


def test_allowlist_entries() -> None:
    allow = UrlAllowlist.parse(["192.168.1.0/24", " NAS.lan. ", "[fd00::1]", "10.1.2.3"])
    assert allow.allows_host("nas.lan")
    assert allow.allows_host("NAS.LAN.")
    assert not allow.allows_host("evil.lan")
    assert allow.allows_address(ipaddress.ip_address("192.168.1.77"))
    assert allow.allows_address(ipaddress.ip_address("fd00::1"))
    assert allow.allows_address(ipaddress.ip_address("10.1.2.3"))
    assert not allow.allows_address(ipaddress.ip_address("10.1.2.4"))
    for bad in ("http://x", "a b", "10.0.0.0/33", "-x.lan"):
        with pytest.raises(ValueError, match="neither"):
            UrlAllowlist.parse([bad])
