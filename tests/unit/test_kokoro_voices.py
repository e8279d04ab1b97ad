from __future__ import annotations

import numpy as np
import pytest

from talkies.engines.kokoro.voices import (
    CATALOG,
    LANGUAGES,
    catalog,
    default_voice,
    mix_styles,
    parse_voice,
    split_text,
)
from talkies.errors import UnknownVoiceError

ALL = catalog(None, LANGUAGES)


def test_catalog_is_the_contracts_41_voices_without_ja_zh() -> None:
    assert len(CATALOG) == 41
    assert len(set(CATALOG)) == 41
    assert {v[0] for v in CATALOG} == set("abefhip")
    assert list(CATALOG) == ALL


def test_catalog_filters_to_present_files_and_installed_languages() -> None:
    present = ["af_heart", "bm_george", "ef_dora", "jf_alpha", "zf_xiaobei"]
    assert catalog(present, LANGUAGES) == ["af_heart", "bm_george", "ef_dora"]
    assert catalog(present, {"a", "b"}) == ["af_heart", "bm_george"]
    assert catalog(None, {"e"}) == ["ef_dora", "em_alex", "em_santa"]


def test_default_voice_prefers_registry_then_af_heart_then_first() -> None:
    assert default_voice(ALL, None) == "af_heart"
    assert default_voice(ALL, "bm_george") == "bm_george"
    assert default_voice(["ef_dora", "em_alex"], "af_heart") == "ef_dora"
    assert default_voice([], None) is None


def test_single_voice() -> None:
    blend = parse_voice("af_bella", ALL)
    assert blend.parts == (("af_bella", 1.0),)
    assert blend.language.espeak == "en-us"


def test_plain_blend_is_equal_weights_and_speaks_first_voices_language() -> None:
    blend = parse_voice("bf_emma+af_sky", ALL)
    assert blend.parts == (("bf_emma", 0.5), ("af_sky", 0.5))
    assert blend.language.code == "b"


def test_weighted_blend_is_normalised() -> None:
    blend = parse_voice("af_bella(2) + af_sky(1)", ALL)
    assert blend.names == ("af_bella", "af_sky")
    assert [w for _, w in blend.parts] == pytest.approx([2 / 3, 1 / 3])
    mixed = parse_voice("af_bella(0.5)+af_sky", ALL)  # an unweighted part weighs 1
    assert [w for _, w in mixed.parts] == pytest.approx([1 / 3, 2 / 3])


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("alloy", "'alloy'"),
        ("af_bella+nope", "'nope'"),
        ("af_bella(x)+af_sky", "'x'"),
        ("af_bella(0)", "'0'"),
        ("af_bella(-1)+af_sky(1)", "'-1'"),
        ("af_bella(inf)", "'inf'"),
        ("af_bella()", "''"),
        ("af_bella+", "''"),
        ("", "empty voice"),
        ("jf_alpha", "'jf_alpha'"),
    ],
)
def test_bad_voice_or_weight_names_it_and_lists_the_catalog(spec: str, named: str) -> None:
    with pytest.raises(UnknownVoiceError) as info:
        parse_voice(spec, ALL, model="kokoro-82m")
    message = info.value.message
    assert named in message
    assert "af_heart, af_alloy" in message
    assert "pm_santa" in message
    assert info.value.param == "voice"


def test_mix_styles_weights_arrays() -> None:
    packs = {"af_bella": np.full((2, 3), 3.0), "af_sky": np.zeros((2, 3))}
    mixed = mix_styles(parse_voice("af_bella(1)+af_sky(2)", ALL), packs.__getitem__)
    np.testing.assert_allclose(mixed, np.full((2, 3), 1.0))


def test_split_text_one_chunk_per_sentence() -> None:
    text = "Hello there. How are you? I am fine!  Thanks.\nNew line here"
    assert split_text(text) == ["Hello there.", "How are you?", "I am fine!", "Thanks.", "New line here"]


def test_split_text_keeps_abbreviations_and_decimals() -> None:
    assert split_text("It costs 3.5 dollars, e.g. this one. Next.") == [
        "It costs 3.5 dollars, e.g. this one.",
        "Next.",
    ]


def test_split_text_bounds_long_sentences_at_clauses_then_words() -> None:
    clause = "word " * 15  # 75 chars
    sentence = ", ".join([clause.strip()] * 6) + "."
    chunks = split_text(sentence, max_chars=100)
    assert all(len(c) <= 100 for c in chunks)
    assert all(c.endswith((",", ".")) for c in chunks)  # cut at clause boundaries
    assert " ".join(chunks).split() == sentence.split()

    run_on = " ".join(f"w{i}" for i in range(200))
    chunks = split_text(run_on, max_chars=50)
    assert all(len(c) <= 50 for c in chunks)
    assert " ".join(chunks).split() == run_on.split()

    assert split_text("x" * 120, max_chars=50) == ["x" * 50, "x" * 50, "x" * 20]


def test_split_text_empty() -> None:
    assert split_text("  \n ") == []


def test_voices_without_a_g2p_speak_the_requested_language_or_english() -> None:
    from talkies.engines.kokoro.base import spoken_language

    assert spoken_language("bf_emma", "fr").code == "b"  # a catalog voice keeps its own language
    assert spoken_language("jm_kumo", None).espeak == "en-us"
    assert spoken_language("jm_kumo", "fr").espeak == "fr-fr"
    assert spoken_language("jm_kumo", "en-gb").code == "b"
    assert spoken_language("zf_xiaobei", "p").espeak == "pt-br"
    assert spoken_language("jm_kumo", "ja").espeak == "en-us"  # no Japanese G2P here: English
