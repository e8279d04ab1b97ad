#!/usr/bin/env bash
# Regenerate the built-in Qwen3-TTS starter voices (alloy, echo, fable) with espeak-ng: synthetic speech
# made here, no third-party recordings. Each is <name>.wav (24 kHz mono s16) + <name>.txt (its transcript,
# for in-context cloning) + <name>.lang. Output: src/talkies/data/qwen3-voices/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/talkies/data/qwen3-voices
mkdir -p "$out"
make_voice() {
    local name=$1 voice=$2 text=$3
    espeak-ng -v "$voice" -s 150 --stdout "$text" \
        | ffmpeg -v error -y -i - -ar 24000 -ac 1 -sample_fmt s16 -bitexact -map_metadata -1 "$out/$name.wav"
    printf '%s\n' "$text" >"$out/$name.txt"
    printf 'English\n' >"$out/$name.lang"
}
make_voice alloy en-us+f3 "The quick brown fox jumps over the lazy dog. A clear voice reads a short passage, calm and steady, so the model can learn how it sounds."
make_voice echo en-us+m3 "Speech synthesis turns written words into sound. This reference clip gives the model a voice to follow, one sentence at a time."
make_voice fable en-gb+m7 "Once upon a time, a storyteller sat by the fire and spoke slowly, so that every listener could follow the tale to its very end."
ls -l "$out"
