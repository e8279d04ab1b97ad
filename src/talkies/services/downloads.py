"""`file_path` URLs: download once into the URL cache, reuse, and never let a URL reach what it must not.

The cache is its own `FileStore` under `$TALKIES_DATA_DIR/cache/urls/`, outside the staging root, so no
`/v1/files` verb (or MCP file tool) can list, read, overwrite or delete a fetched body: a URL fetched on one
client's behalf is never readable back through the API, and nobody can poison the entry another client's
`file_path` will use.

SSRF guard. Each hop's host is resolved ONCE (`Resolver`), every address is checked, and the connection is
dialled to those checked addresses only: the HTTP stack gets a network backend that maps the URL's host to the
pinned addresses and refuses any other destination, while the Host header and TLS SNI / certificate check stay
on the hostname. A DNS answer that changes between the check and the connect (rebinding) therefore cannot
redirect the connection. Redirects are followed by hand (at most `max_redirects`); every hop is checked again.
Link-local and cloud-metadata addresses are refused always; with `block_private` (the default) every address
that is not globally routable is refused as well, unless the URL's host or the address is on the allowlist
(`TALKIES_URL_ALLOWLIST`: host names and CIDRs).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import stat
import time
import typing
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import unquote

import anyio
import anyio.to_thread
import httpcore
import httpx

from talkies.errors import DownloadError, StagedFileNotFoundError
from talkies.netpolicy import IPAddress, UrlAllowlist
from talkies.services.files import PART_SUFFIX, FileStore, write_capped

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) -> the addresses it resolves to, as strings."""

ALWAYS_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OCI metadata)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_WRITE_BUFFER = 64 * 1024  # small enough that an oversized body has hit the disk before it is refused


def is_url(file_path: str) -> bool:
    return bool(_URL_SCHEME.match(file_path))


def cache_name(url: str) -> str:
    """`<sha256(url)[:16]>-<safe basename>`: stable per URL, readable in listings."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    basename = unquote(httpx.URL(url).path.rsplit("/", 1)[-1])
    safe = _UNSAFE_NAME_CHARS.sub("_", basename).strip("._")[:80] or "download"
    if safe.endswith(PART_SUFFIX):
        safe += "_"
    return f"{digest}-{safe}"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, IPv4-compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _V4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(
    address: IPAddress, *, block_private: bool, allowlist: UrlAllowlist | None = None, host: str = ""
) -> str | None:
    """Why the guard refuses `address` (which `host` resolved to), or None when it may be dialled."""
    forms: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            forms[0] = address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            forms.append(embedded)
    for form in forms:
        if any(form.version == net.version and form in net for net in ALWAYS_BLOCKED):
            return f"{address} is a link-local or cloud-metadata address"
    if allowlist is not None and (allowlist.allows_host(host) or allowlist.allows_address(address)):
        return None
    if block_private:
        for form in forms:
            if (
                form.is_private
                or form.is_loopback
                or form.is_link_local
                or form.is_multicast
                or form.is_reserved
                or form.is_unspecified
                or not form.is_global
            ):
                return (
                    f"{address} is not a public address; add the host or its network to "
                    "TALKIES_URL_ALLOWLIST to trust it "
                    "(TALKIES_BLOCK_PRIVATE_DOWNLOADS=false turns the guard off)"
                )
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Dials only the addresses pinned for a (host, port); anything else is refused before a socket opens."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, pins: dict[tuple[str, int], list[str]]) -> None:
        self._inner = inner
        self._pins = pins

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self._pins.get((host.lower(), port))
        if not addresses:
            raise httpcore.ConnectError(f"refusing to dial {host}:{port}: not a checked address")
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never dialled for downloads")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class Downloader:
    """Fetches `file_path` URLs into the download cache (one fetch per URL at a time, LRU-bounded)."""

    def __init__(
        self,
        cache: FileStore,
        *,
        max_bytes: int,
        cache_bytes: int = 0,
        block_private: bool = True,
        allowlist: UrlAllowlist | None = None,
        resolver: Resolver = system_resolver,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        total_timeout: float = 600.0,
        max_redirects: int = 5,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.cache = cache
        self.max_bytes = max_bytes
        self.cache_bytes = cache_bytes
        self.block_private = block_private
        self.allowlist = allowlist or UrlAllowlist()
        self.max_redirects = max_redirects
        self.total_timeout = total_timeout
        self._resolver = resolver
        self._backend = network_backend or httpcore.AnyIOBackend()
        self._timeouts = {
            "connect": connect_timeout,
            "read": read_timeout,
            "write": read_timeout,
            "pool": connect_timeout,
        }
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._locks: dict[str, anyio.Lock] = {}
        self._waiting: Counter[str] = Counter()
        self._leases: Counter[str] = Counter()

    @property
    def directory(self) -> Path:
        """The cache directory: its own root, outside the staging area."""
        return self.cache.root

    async def fetch(self, url: str) -> Path:
        """The cached copy of `url`, downloading it first when it is not cached yet.

        One fetch per URL at a time: a second caller waits for the first one's download (and is cancelled
        like any await when its own request is). The wait and the download together end within
        `total_timeout` (TALKIES_DOWNLOAD_TIMEOUT), however slowly the server trickles."""
        parsed = self._parse(url)
        name = cache_name(url)
        self._waiting[name] += 1
        lock = self._locks.setdefault(name, anyio.Lock())
        try:
            with anyio.move_on_after(self.total_timeout):
                return await self._fetch_locked(parsed, name, lock)
            raise DownloadError(
                f"downloading {parsed} did not finish within {self.total_timeout:g} s "
                "(TALKIES_DOWNLOAD_TIMEOUT)",
                param="file_path",
            )
        finally:
            self._waiting[name] -= 1
            if self._waiting[name] <= 0:
                del self._waiting[name]
                self._locks.pop(name, None)

    async def _fetch_locked(self, parsed: httpx.URL, name: str, lock: anyio.Lock) -> Path:
        async with lock:
            cached = await anyio.to_thread.run_sync(self._touch_cached, name)
            if cached is not None:
                return cached
            await self._download(parsed, name)
            await anyio.to_thread.run_sync(_mark_used, self.directory / name)
            await anyio.to_thread.run_sync(self._evict, name)
            return self.directory / name

    def fetches(self, url: str) -> int:
        """Fetches of `url` under way: the one downloading (or reading the cache) and those waiting for it."""
        return self._waiting[cache_name(url)]

    @contextlib.asynccontextmanager
    async def lease(self, url: str) -> AsyncIterator[Path]:
        """`fetch`, and keep the entry out of eviction while the caller uses it."""
        name = cache_name(url)
        self._leases[name] += 1
        try:
            yield await self.fetch(url)
        finally:
            self._leases[name] -= 1
            if self._leases[name] <= 0:
                del self._leases[name]

    # --- cache --------------------------------------------------------------------------------
    def _touch_cached(self, relative: str) -> Path | None:
        try:
            opened = self.cache.open_sync(relative)
        except StagedFileNotFoundError:
            return None
        opened.close()
        _mark_used(opened.path)
        return opened.path

    def _evict(self, keep: str) -> None:
        if self.cache_bytes <= 0:
            return
        entries: list[tuple[float, int, str]] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as scan:
            for entry in scan:
                if entry.name.endswith(PART_SUFFIX):
                    continue
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    entries.append((info.st_mtime, info.st_size, entry.name))
        total = sum(size for _, size, _ in entries)
        for _, size, name in sorted(entries):
            if total <= self.cache_bytes:
                return
            if name == keep or self._leases[name] > 0:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
            total -= size

    # --- fetching -----------------------------------------------------------------------------
    def _parse(self, url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise DownloadError(f"invalid URL {url!r}: {exc}", param="file_path") from None
        if parsed.scheme not in ("http", "https"):
            raise DownloadError(
                f"unsupported URL scheme {parsed.scheme!r}: use http or https", param="file_path"
            )
        if not parsed.raw_host:
            raise DownloadError(f"URL has no host: {url}", param="file_path")
        return parsed

    async def _checked_addresses(self, url: httpx.URL, port: int) -> list[str]:
        host = url.raw_host.decode("ascii")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            answers: Sequence[str] = [host]
        else:
            try:
                answers = await self._resolver(host, port)
            except OSError as exc:
                raise DownloadError(f"could not resolve host {host}: {exc}", param="file_path") from None
        if not answers:
            raise DownloadError(f"could not resolve host {host}", param="file_path")
        for answer in answers:
            reason = refusal_reason(
                ipaddress.ip_address(answer),
                block_private=self.block_private,
                allowlist=self.allowlist,
                host=host,
            )
            if reason is not None:
                raise DownloadError(f"refusing to download from {host}: {reason}", param="file_path")
        return [str(ipaddress.ip_address(a.split("%", 1)[0])) for a in answers]

    async def _download(self, url: httpx.URL, relative: str) -> None:
        original = url
        for _hop in range(self.max_redirects + 1):
            port = url.port or (443 if url.scheme == "https" else 80)
            host = url.raw_host.decode("ascii").lower()
            addresses = await self._checked_addresses(url, port)
            backend = PinnedBackend(self._backend, {(host, port): addresses})
            location = await self._get(url, host, port, backend, relative)
            if location is None:
                return
            url = self._parse(str(url.join(location)))
        raise DownloadError(
            f"too many redirects (more than {self.max_redirects}) fetching {original}", param="file_path"
        )

    async def _get(
        self, url: httpx.URL, host: str, port: int, backend: PinnedBackend, relative: str
    ) -> str | None:
        """One GET: the redirect target, or None once the body is saved."""
        host_header = f"[{host}]" if ":" in host else host
        if url.port is not None:
            host_header += f":{port}"
        target = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
        headers = [
            (b"Host", host_header.encode("ascii")),
            (b"User-Agent", b"talkies"),
            (b"Accept-Encoding", b"identity"),
        ]
        extensions = {"timeout": self._timeouts}
        try:
            async with (
                httpcore.AsyncConnectionPool(ssl_context=self._ssl_context, network_backend=backend) as pool,
                pool.stream("GET", target, headers=headers, extensions=extensions) as response,
            ):
                if response.status in REDIRECT_STATUSES:
                    location = _header(response.headers, b"location")
                    if not location:
                        raise DownloadError(
                            f"{url} answered HTTP {response.status} without a Location", param="file_path"
                        )
                    return location
                if not 200 <= response.status < 300:
                    raise DownloadError(f"{url} answered HTTP {response.status}", param="file_path")
                length = _header(response.headers, b"content-length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise self._too_large(url)
                await self._save(url, response.aiter_stream(), relative)
                return None
        except (
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            ssl.SSLError,
        ) as exc:
            message = f"could not fetch {url}: {type(exc).__name__}: {exc}"
            raise DownloadError(message, param="file_path") from None

    def _too_large(self, url: httpx.URL) -> DownloadError:
        return DownloadError(
            f"{url} is larger than TALKIES_MAX_DOWNLOAD_BYTES ({self.max_bytes} bytes)", param="file_path"
        )

    async def _save(self, url: httpx.URL, body: AsyncIterator[bytes], relative: str) -> None:
        writer = await anyio.to_thread.run_sync(self.cache.begin_write, relative)
        await write_capped(
            writer,
            body,
            cap=self.max_bytes,
            too_large=lambda: self._too_large(url),
            buffer_bytes=_WRITE_BUFFER,
        )


def _mark_used(path: Path) -> None:
    """Recency for the LRU bound. An explicit fine-grained time: the kernel stamps writes and a bare
    utime() from a coarse clock, so two uses a few milliseconds apart could otherwise tie."""
    now = time.time_ns()
    os.utime(path, ns=(now, now), follow_symlinks=False)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


@contextlib.asynccontextmanager
async def using_file_path(file_path: str, *, files: FileStore, downloads: Downloader) -> AsyncIterator[Path]:
    """A transcription's `file_path`: a staged file (404 when missing) or an http(s) URL (downloaded), a
    downloaded entry kept safe from cache eviction until the block ends (the decoder opens it twice)."""
    if is_url(file_path):
        async with downloads.lease(file_path) as path:
            yield path
    else:
        yield await files.existing(file_path)
