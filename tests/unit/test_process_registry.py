"""`process` entries in the registry: schema, llama-swap macros, llama-swap YAML files, group rules."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from talkies.engines.process.command import split_command
from talkies.errors import ConfigError
from talkies.registry import load_registry
from talkies.registry.groups import GroupRules
from talkies.registry.schema import GroupSpec, ModelSpec


def registry_file(tmp_path: Path, models: dict[str, Any], **top: Any) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models, **top}))
    return path


def proc(**fields: Any) -> dict[str, Any]:
    return {"executor": "process", "modality": "asr", "cmd": "server --port ${PORT}", **fields}


# --- schema ---------------------------------------------------------------------------------------------


def test_process_entry_fields_and_defaults(tmp_path: Path) -> None:
    spec = load_registry(registry_file(tmp_path, {"w": proc()})).models["w"]
    assert spec.proxy == "http://127.0.0.1:${PORT}"  # default, ${PORT} filled in when the child starts
    assert spec.max_concurrency == 10  # llama-swap's concurrencyLimit default
    limited = load_registry(registry_file(tmp_path, {"w": proc(concurrencyLimit=2)})).models["w"]
    assert limited.max_concurrency == 2


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"executor": "process", "cmd": "x --port ${PORT}"},
            r"field 'modality' \(asr, tts or diarization\) is required",
        ),
        ({"executor": "process", "modality": "tts"}, "field 'cmd' is required for executor 'process'"),
        ({"executor": "espeak", "cmdStop": "x"}, "cmdStop: only for executor 'process', not 'espeak'"),
        (proc(env=["no equals sign"]), "env entry 'no equals sign' is not NAME=value"),
        (proc(concurrencyLimit=2, max_concurrency=3), "either 'concurrencyLimit' or 'max_concurrency'"),
        (proc(filters={"stripParams": "x"}), "filters"),
    ],
)
def test_bad_process_entries_are_refused(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_registry(registry_file(tmp_path, {"m": entry}))


def test_json_registry_mixes_process_and_builtin_models(tmp_path: Path) -> None:
    path = registry_file(
        tmp_path,
        {"espeak-ng": {"executor": "espeak"}, "ext": proc(modality="tts")},
        healthCheckTimeout=30,
        unloadTimeout=3,
        globalTTL=0,
    )
    registry = load_registry(path)
    assert registry.models["espeak-ng"].ttl == 0
    assert registry.models["ext"].health_check_timeout == 30
    assert registry.models["ext"].unload_timeout == 3
    assert registry.models["espeak-ng"].unload_timeout is None


# --- macros ---------------------------------------------------------------------------------------------


def test_macros_expand_in_llama_swap_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MODELS", "/srv/models")
    path = registry_file(
        tmp_path,
        {
            "w": proc(
                cmd="${server}\n  # a comment with ${undefined} is dropped\n  --model ${dir}/${MODEL_ID}.bin",
                macros={"dir": "${env.TEST_MODELS}/own", "threads": 8},
                concurrencyLimit="${threads}",
            )
        },
        macros={"base": "/opt/bin", "server": "${base}/server --port ${PORT}", "dir": "global"},
    )
    spec = load_registry(path).models["w"]
    assert split_command(spec.cmd or "") == [
        "/opt/bin/server",
        "--port",
        "${PORT}",
        "--model",
        "/srv/models/own/w.bin",
    ]
    assert spec.max_concurrency == 8  # a whole-value macro keeps its type


@pytest.mark.parametrize(
    ("macros", "cmd", "message"),
    [
        ({"PORT": "1"}, "x ${PORT}", "macro name 'PORT' is reserved"),
        ({"bad name": "1"}, "x ${PORT}", r"must match \^\[a-zA-Z0-9_-\]\+\$"),
        ({"a": "${a}"}, "x ${PORT}", "macro 'a' refers to itself"),
        ({"a": ["list"]}, "x ${PORT}", "must be a string, number or bool"),
        ({"late": "${early}", "early": "1"}, "x ${PORT} ${late}", r"unknown macro \$\{early\} in cmd"),
        ({}, "x ${PORT} ${PID}", r"unknown macro \$\{PID\} in cmd"),
        ({}, "x ${env.TEST_SURELY_UNSET}", "environment variable 'TEST_SURELY_UNSET' is not set"),
    ],
)
def test_macro_rules(tmp_path: Path, macros: dict[str, Any], cmd: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_registry(registry_file(tmp_path, {"w": proc(cmd=cmd, macros=macros)}))


def test_port_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"proxy uses \$\{PORT\} but cmd does not"):
        load_registry(registry_file(tmp_path, {"w": proc(cmd="server --port 9000")}))
    fixed = load_registry(
        registry_file(tmp_path, {"w": proc(cmd="server --port 9000", proxy="http://h:9000")})
    )
    assert fixed.models["w"].proxy == "http://h:9000"
    stop = proc(cmdStop="kill ${PID}")
    assert load_registry(registry_file(tmp_path, {"w": stop})).models["w"].cmd_stop == "kill ${PID}"


def test_split_command_like_llama_swap() -> None:
    cmd = "/bin/server \\\n  --name 'two words'\n  # --skipped\n  --flag"
    assert split_command(cmd) == ["/bin/server", "--name", "two words", "--flag"]
    assert split_command(["a b", "c"]) == ["a b", "c"]


# --- llama-swap YAML ------------------------------------------------------------------------------------


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_yaml_config_is_a_registry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_yaml(
        tmp_path,
        """
healthCheckTimeout: 60
startPort: 10001
macros:
  server: /opt/whisper-server --port ${PORT}
models:
  whisper:
    modality: asr
    cmd: |
      ${server}
        # a comment
        --model /m/${MODEL_ID}.bin
    aliases: [whisper-1]
    ttl: 300
  kokoro-tts:
    modality: tts
    useModelName: tts-1
    cmd: docker run --rm --name ${MODEL_ID} -p ${PORT}:8880 image
    cmdStop: docker stop ${MODEL_ID}
  llama-8B:
    cmd: llama-server --port ${PORT}
  embedding:
    cmd: llama-server --port ${PORT}
groups:
  rag:
    swap: false
    members: [embedding, llama-8B]
""",
    )
    with caplog.at_level(logging.WARNING):
        registry = load_registry(path)
    assert list(registry.models) == ["whisper", "kokoro-tts"]
    assert "model 'llama-8B' has no 'modality'" in caplog.text
    whisper = registry.models["whisper"]
    assert whisper.executor == "process"
    assert whisper.health_check_timeout == 60
    assert whisper.ttl == 300
    assert split_command(whisper.cmd or "")[-2:] == ["--model", "/m/whisper.bin"]
    assert registry.models["kokoro-tts"].cmd_stop == "docker stop kokoro-tts"
    assert registry.resolve("whisper-1") == "whisper"
    assert registry.start_port == 10001
    # the LLM-only group is gone; the speech models form llama-swap's default swap + exclusive group
    assert set(registry.group_specs) == {"(default)"}
    default = registry.group_specs["(default)"]
    assert (default.swap, default.exclusive, default.persistent) == (True, True, False)


def test_yaml_env_macros_are_replaced_in_the_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TTL", "42")
    path = write_yaml(
        tmp_path,
        "# ${env.TEST_ONLY_IN_A_COMMENT} is ignored\nmodels:\n  m:\n    modality: tts\n"
        "    cmd: srv --port ${PORT}\n    ttl: ${env.TEST_TTL}\n",
    )
    assert load_registry(path).models["m"].ttl == 42


def test_yaml_may_name_a_builtin_executor(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        'models:\n  srv: {modality: tts, cmd: "srv --port ${PORT}"}\n'
        "  espeak-ng: {executor: espeak, default_voice: en-us}\n",
    )
    registry = load_registry(path)
    assert registry.models["espeak-ng"].executor == "espeak"
    assert registry.models["espeak-ng"].modality == "tts"  # implied, no 'modality:' needed
    assert registry.models["srv"].executor == "process"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiKeys: [k]\nlogLevel: debug\nmodels: {}", "does not support apiKeys, logLevel"),
        (
            "models:\n  m:\n    modality: asr\n    cmd: x\n    filters: {}\n    metadata: {}",
            "uses filters, metadata",
        ),
        (
            "routing:\n  router:\n    use: matrix\nmodels:\n  m: {modality: asr, cmd: x}",
            "'matrix' is not supported",
        ),
        (
            "groups: {a: {members: [m]}}\nrouting: {router: {settings: {groups: {b: {members: [m]}}}}}\n"
            'models:\n  m: {modality: asr, cmd: "x --port ${PORT}"}',
            "both at the top level and under routing.router.settings",
        ),
        (
            "groups: {a: {members: [m]}, b: {members: [m]}}\n"
            'models:\n  m: {modality: asr, cmd: "x --port ${PORT}"}',
            "model 'm' is in groups 'a' and 'b'",
        ),
        ("models:\n  m: {cmd: x}", "no model has a 'modality'"),
    ],
)
def test_yaml_refusals_name_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_registry(write_yaml(tmp_path, text))


def test_yaml_groups_under_routing(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
models:
  a: {modality: asr, cmd: "srv --port ${PORT}"}
  b: {modality: tts, cmd: "srv --port ${PORT}"}
routing:
  router:
    use: group
    settings:
      groups:
        duo: {swap: false, persistent: true, members: [a, b]}
""",
    )
    group = load_registry(path).group_specs["duo"]
    assert (group.swap, group.exclusive, group.persistent) == (False, True, True)


# --- group rules ----------------------------------------------------------------------------------------


def spec(slug: str) -> ModelSpec:
    return ModelSpec.model_validate({"slug": slug, "executor": "espeak"})


def test_swap_exclusive_and_persistent() -> None:
    rules = GroupRules(
        {
            "swapper": GroupSpec(members=("s1", "s2"), swap=True, exclusive=False),
            "duo": GroupSpec(members=("d1", "d2"), swap=False, exclusive=True),
            "keep": GroupSpec(members=("k1",), swap=True, exclusive=False, persistent=True),
        }
    )
    everyone = [spec(s) for s in ("s1", "s2", "d1", "d2", "k1", "loose")]

    def victims(loading: str) -> set[str]:
        return {v.slug for v in rules.victims(spec(loading), everyone, max_loaded=1)}

    assert victims("s1") == {"s2"}  # swap: its sibling goes; not exclusive: the others stay
    assert victims("d1") == {"s1", "s2", "loose"}  # exclusive: other groups go, not persistent k1
    assert victims("k1") == set()  # persistent and not exclusive: evicts nobody
    # a model outside every group: TALKIES_MAX_LOADED_MODELS, never a persistent member
    assert victims("loose") == {"s1", "s2", "d1", "d2"}


def test_unflagged_groups_keep_their_original_meaning() -> None:
    rules = GroupRules({"desk": GroupSpec(members=("a", "b"))})
    resident = [spec("a"), spec("c")]
    assert [v.slug for v in rules.victims(spec("b"), resident, max_loaded=1)] == ["c"]
    assert [v.slug for v in rules.victims(spec("c"), [spec("a"), spec("b")], max_loaded=2)] == ["a"]
