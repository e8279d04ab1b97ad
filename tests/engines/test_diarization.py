"""The sherpa-onnx diarizer (talkies.engines.diarization.sherpa) loaded for real on the tiny handcrafted ONNX
pair (tests/fixtures/diarization.py): a two-voice espeak-ng conversation comes back as four turns within
0.5 s of the truth, speakers alternating; speaker-count hints; embeddings of references and speakers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkies.engines.base import EngineContext
from talkies.engines.diarization.protocol import DiarizationRequest, Diarizer
from talkies.engines.diarization.sherpa import SherpaDiarizer
from talkies.errors import ModelLoadError
from talkies.registry.schema import ModelSpec
from talkies.services.diarization import match_known_speakers
from tests.fixtures.diarization import FEMALE, LINES, MALE, THIRD, build_tiny_snapshot, conversation
from tests.fixtures.speech import espeak

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def diarizer(tmp_path_factory: pytest.TempPathFactory) -> SherpaDiarizer:
    model_dir = build_tiny_snapshot(tmp_path_factory.mktemp("tiny-diarizer"))
    spec = ModelSpec(slug="tiny", executor="sherpa_diarization", repo="local/tiny")
    engine = SherpaDiarizer(
        spec, EngineContext(slug="tiny", model_dir=model_dir, device="cpu", cpu_threads=1)
    )
    engine.load()
    return engine


def test_two_voices_four_turns_within_half_a_second(diarizer: SherpaDiarizer) -> None:
    assert isinstance(diarizer, Diarizer)
    talk = conversation((MALE, FEMALE))
    result = diarizer.diarize(DiarizationRequest(audio=talk.audio, num_speakers=2))
    assert len(result.turns) == 4
    speakers = [turn.speaker for turn in result.turns]
    assert speakers[0] == speakers[2] != speakers[1] == speakers[3]
    for turn, (start, end, _) in zip(result.turns, talk.turns, strict=True):
        assert abs(turn.start - start) <= 0.5, (result.turns, talk.turns)
        assert abs(turn.end - end) <= 0.5, (result.turns, talk.turns)
    assert sorted(result.speaker_embeddings) == sorted(set(speakers))
    assert all(len(vector) == 80 for vector in result.speaker_embeddings.values())


def test_speaker_count_hints(diarizer: SherpaDiarizer) -> None:
    talk = conversation((MALE, FEMALE, THIRD), LINES[:3])
    found = {turn.speaker for turn in diarizer.diarize(DiarizationRequest(audio=talk.audio)).turns}
    assert len(found) == 3
    capped = diarizer.diarize(DiarizationRequest(audio=talk.audio, max_speakers=2)).turns
    assert len({turn.speaker for turn in capped}) == 2
    one = diarizer.diarize(DiarizationRequest(audio=talk.audio, num_speakers=1)).turns
    assert len({turn.speaker for turn in one}) == 1
    within = diarizer.diarize(DiarizationRequest(audio=talk.audio, min_speakers=2, max_speakers=4)).turns
    assert len({turn.speaker for turn in within}) == 3


def test_a_count_that_comes_back_short_asks_for_more_clusters(diarizer: SherpaDiarizer) -> None:
    """Two voices: three clusters leave one without a turn on the tiny pair, so `min_speakers=3` (and
    `num_speakers=3`) take one more cluster; `max_speakers` is never exceeded while doing so."""
    talk = conversation((MALE, FEMALE))

    def count(**hint: int) -> int:
        turns = diarizer.diarize(DiarizationRequest(audio=talk.audio, **hint)).turns
        assert len(turns) >= 4
        return len({turn.speaker for turn in turns})

    assert count() == 2
    assert count(min_speakers=3) == 3
    assert count(num_speakers=3) == 3
    assert count(min_speakers=3, max_speakers=3) == 3
    assert count(min_speakers=2) == 2


def test_references_match_their_speakers(diarizer: SherpaDiarizer) -> None:
    talk = conversation((MALE, FEMALE, THIRD), LINES[:3])
    references = (espeak(LINES[3], FEMALE), espeak(LINES[2], MALE))
    result = diarizer.diarize(DiarizationRequest(audio=talk.audio, num_speakers=3, references=references))
    assert len(result.reference_embeddings) == 2
    names = match_known_speakers(result.speaker_embeddings, result.reference_embeddings, ("her", "him"), 0.5)
    first = {turn.speaker: index for index, turn in reversed(list(enumerate(result.turns)))}
    by_turn = {first[speaker]: name for speaker, name in names.items()}
    assert by_turn == {0: "him", 1: "her"}  # the whispering third voice matches neither


def test_silence_is_no_turn(diarizer: SherpaDiarizer) -> None:
    result = diarizer.diarize(DiarizationRequest(audio=np.zeros(16_000 * 3, dtype=np.float32)))
    assert result.turns == []
    assert result.speaker_embeddings == {}


def test_a_missing_embedding_model_names_the_file(tmp_path: Path) -> None:
    model_dir = build_tiny_snapshot(tmp_path / "snapshot")
    (model_dir / "embedding.onnx").unlink()
    spec = ModelSpec(slug="tiny", executor="sherpa_diarization", repo="local/tiny")
    engine = SherpaDiarizer(spec, EngineContext(slug="tiny", model_dir=model_dir, device="cpu"))
    with pytest.raises(ModelLoadError, match=r"embedding\.onnx"):
        engine.load()
