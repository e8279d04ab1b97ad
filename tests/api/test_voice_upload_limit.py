"""`POST /v1/audio/voices`: a header that under-states the duration gains nothing, decoding stops at the
60 s limit (real PyAV decoding of a crafted FLAC file)."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from talkies.api.app import create_app
from talkies.audio import decode
from talkies.audio.decode import probe_audio
from talkies.services.voices import MAX_SECONDS
from tests.api.audio_helpers import weightfree_settings
from tests.server import asgi_client

pytestmark = pytest.mark.anyio
RATE = 8000


def lying_flac(path: Path, seconds: int, claims: float) -> Path:
    """`seconds` of faint clicks in a FLAC file whose STREAMINFO says it holds `claims` seconds."""
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=RATE, layout="mono")
        block = np.zeros((1, RATE), dtype=np.int16)
        block[0, ::50] = 300  # not silent, and compresses well
        for second in range(seconds):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = second * RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    # STREAMINFO: 20 bits rate, 3 channels, 5 bits per sample, 36 bits total samples, from byte 18 of the file
    (word,) = struct.unpack(">Q", data[18:26])
    data[18:26] = struct.pack(">Q", (word & ~((1 << 36) - 1)) | int(claims * RATE))
    path.write_bytes(bytes(data))
    return path


async def test_a_header_that_lies_about_the_duration_is_refused_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = lying_flac(tmp_path / "ten-minutes.flac", seconds=600, claims=20)
    assert probe_audio(sample).duration == 20.0  # what the header says; it holds 600 s
    decoded: list[int] = []
    append = decode._Buffer.append

    def counting(self: decode._Buffer, block: np.ndarray) -> None:
        decoded.append(block.shape[-1])
        append(self, block)

    monkeypatch.setattr(decode._Buffer, "append", counting)
    app = create_app(weightfree_settings(tmp_path))
    async with asgi_client(app, timeout=120) as http:
        with sample.open("rb") as handle:
            response = await http.post(
                "/v1/audio/voices",
                data={"name": "liar"},
                files={"audio_sample": ("a.flac", handle, "audio/flac")},
            )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "audio_sample"
    assert f"longer than {MAX_SECONDS:.0f} s" in response.json()["detail"]
    voice_rate = 24_000
    assert sum(decoded) <= (MAX_SECONDS + 1) * voice_rate  # decoding stopped at the limit, not at 600 s
    assert not (app.state.settings.custom_voices_dir / "liar.wav").exists()
