"""FileStore: path safety, symlinks never followed, atomic uploads, listing, pruning."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from talkies.errors import InvalidPathError, PayloadTooLargeError, StagedFileNotFoundError
from talkies.services.files import NAME_RULE, FileStore, decode_raw_path, split_path

pytestmark = pytest.mark.anyio

HOSTILE_PATHS = [
    "",
    "/",
    "a\x00b.wav",
    "a\\b.wav",
    "..\\secret",
    "../etc/passwd",
    "a/../../etc/passwd",
    "a/..",
    "./a.wav",
    "a/./b.wav",
    ".",
    "..",
    "a//b.wav",
    "//etc/passwd",
    "a/b/",
    "clip.wav.part",
    "/lectures/a.wav",
    "~/.ssh/authorized_keys",
    "a/~b.wav",
    "..;/x",
    ".hidden",
    "a/.git/config",
    "\udcc0\udcae\udcc0\udcae/x",  # %c0%ae%c0%ae (overlong '.') as decode_raw_path hands it over
    "x\udcff.wav",
    "x\n.wav",
    "x\x1b[31m.wav",
    "x\x7f.wav",
    "x\x85.wav",
    "x\u2028.wav",
    "/".join(["d"] * 17),
    "x" * 256,
    "/".join(["y" * 200] * 6),
]


@pytest.mark.parametrize(
    "path",
    ["a.wav", "lectures/2026-03-15/talk.mp3", "日本語/音声.wav", "a b/c (1).wav", "x.part.wav", "a/b~.wav"],
)
def test_ordinary_names_are_accepted(store: FileStore, path: str) -> None:
    assert split_path(path) == path.split("/")
    assert store.resolve(path) == store.root.joinpath(*path.split("/"))


def test_the_refusal_names_the_rule() -> None:
    with pytest.raises(InvalidPathError) as info:
        split_path("~/.ssh/x")
    assert "starts with '~'" in info.value.message
    assert NAME_RULE in info.value.message


def test_decode_raw_path_keeps_invalid_utf8_visible() -> None:
    assert decode_raw_path(b"a%20b/%E6%97%A5.wav") == "a b/日.wav"
    with pytest.raises(InvalidPathError, match="not valid UTF-8"):
        split_path(decode_raw_path(b"%c0%ae%c0%ae/x"))


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "files", max_upload_bytes=1000)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize("path", HOSTILE_PATHS)
async def test_hostile_paths_are_rejected_everywhere(store: FileStore, path: str) -> None:
    with pytest.raises(InvalidPathError):
        split_path(path)
    with pytest.raises(InvalidPathError):
        store.resolve(path)
    with pytest.raises(InvalidPathError):
        await store.put(path, _chunks(b"x"))
    with pytest.raises(InvalidPathError):
        await store.open_for_read(path)
    with pytest.raises(InvalidPathError):
        await store.delete(path)
    assert not list(store.root.parent.rglob("passwd"))


def test_leading_slash_is_refused(store: FileStore) -> None:
    with pytest.raises(InvalidPathError, match="leading '/'"):
        store.resolve("/foo/bar/clip.mp3")
    assert store.resolve("foo/bar/clip.mp3") == store.root / "foo" / "bar" / "clip.mp3"


async def test_put_get_list_delete_roundtrip(store: FileStore) -> None:
    info = await store.put("lectures/2026/talk.mp3", _chunks(b"abc", b"def"))
    assert info == {"path": "lectures/2026/talk.mp3", "size": 6}
    opened = await store.open_for_read("lectures/2026/talk.mp3")
    assert (opened.size, opened.content_type) == (6, "audio/mpeg")
    assert b"".join([c async for c in opened.chunks()]) == b"abcdef"
    await store.put("b.wav", _chunks(b"1"))
    await store.put("a/z.bin", _chunks(b""))
    listing = await store.list()
    assert [f["path"] for f in listing] == ["a/z.bin", "b.wav", "lectures/2026/talk.mp3"]
    assert listing[1]["size"] == 1
    assert listing[1]["modified"].endswith("Z")
    assert (await store.open_for_read("a/z.bin")).content_type == "application/octet-stream"
    await store.delete("lectures/2026/talk.mp3")
    assert not (store.root / "lectures").exists()
    assert store.root.is_dir()
    await store.delete("b.wav")
    await store.delete("a/z.bin")
    assert store.root.is_dir()
    assert list(store.root.iterdir()) == []


async def test_put_overwrites(store: FileStore) -> None:
    await store.put("x.wav", _chunks(b"old"))
    await store.put("x.wav", _chunks(b"newer"))
    assert (store.root / "x.wav").read_bytes() == b"newer"


async def test_missing_files_are_404(store: FileStore) -> None:
    with pytest.raises(StagedFileNotFoundError):
        await store.open_for_read("nope.wav")
    with pytest.raises(StagedFileNotFoundError):
        await store.delete("no/such/dir.wav")
    (store.root / "dir").mkdir()
    with pytest.raises(StagedFileNotFoundError):
        await store.open_for_read("dir")
    with pytest.raises(StagedFileNotFoundError):
        await store.delete("dir")


async def test_upload_over_cap_leaves_nothing(store: FileStore) -> None:
    with pytest.raises(PayloadTooLargeError):
        await store.put("deep/er/big.wav", _chunks(b"x" * 600, b"x" * 600))
    assert list(store.root.iterdir()) == []


async def test_failing_stream_leaves_nothing_and_keeps_old_file(store: FileStore) -> None:
    await store.put("keep.wav", _chunks(b"original"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put("keep.wav", broken())
    with pytest.raises(ConnectionResetError):
        await store.put("new/dir/f.wav", broken())
    assert (store.root / "keep.wav").read_bytes() == b"original"
    assert sorted(p.name for p in store.root.rglob("*")) == ["keep.wav"]


async def test_symlinks_are_never_followed(store: FileStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    os.symlink(outside, store.root / "escape")
    os.symlink(outside / "secret.txt", store.root / "link.txt")

    for path in ("escape/secret.txt", "link.txt"):
        with pytest.raises(StagedFileNotFoundError):
            await store.open_for_read(path)
        with pytest.raises(StagedFileNotFoundError):
            await store.delete(path)
        with pytest.raises(StagedFileNotFoundError):
            store.resolve(path)
    with pytest.raises(InvalidPathError):
        await store.put("escape/planted.txt", _chunks(b"x"))
    assert (outside / "secret.txt").read_text() == "top secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert [f["path"] for f in await store.list()] == []


async def test_put_bytes_sync_and_cap(store: FileStore) -> None:
    assert store.put_bytes_sync("a/b.txt", b"hello") == {"path": "a/b.txt", "size": 5}
    with pytest.raises(PayloadTooLargeError):
        store.put_bytes_sync("a/c.txt", b"x" * 1001)
    assert sorted(f["path"] for f in store.list_sync()) == ["a/b.txt"]
