"""talkies.ray.remote: what a streamed call's failure becomes at the ingress, whichever transport carried
it (Serve's gRPC transport hands the replica's exception over as is; by reference, it is a RayTaskError)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ray.exceptions import ActorUnavailableError, RayTaskError

from talkies.errors import EngineError, UnknownVoiceError, WorkerCrashedError
from talkies.ray.remote import _items


class Responses:
    """A DeploymentResponseGenerator's surface that `_items` uses: next() and cancel()."""

    def __init__(self, items: list[Any], failure: BaseException) -> None:
        self._items: Iterator[Any] = iter(items)
        self._failure = failure
        self.cancelled = False

    def __iter__(self) -> Responses:
        return self

    def __next__(self) -> Any:
        for item in self._items:
            return item
        raise self._failure

    def cancel(self) -> None:
        self.cancelled = True


def _drain(failure: BaseException) -> tuple[list[Any], BaseException, bool]:
    responses = Responses([b"one", b"two"], failure)
    got: list[Any] = []
    try:
        for item in _items(responses, "voice"):  # type: ignore[arg-type]
            got.append(item)
    except Exception as exc:
        return got, exc, responses.cancelled
    raise AssertionError("the stream ended without its failure")


def test_a_domain_error_from_the_replica_keeps_its_kind() -> None:
    got, raised, cancelled = _drain(UnknownVoiceError("voice 'x' is not a voice of model 'voice'"))
    assert got == [b"one", b"two"]
    assert type(raised) is UnknownVoiceError
    assert cancelled


def test_any_other_failure_on_the_replica_is_an_engine_error_naming_the_model() -> None:
    _, raised, _ = _drain(ValueError("espeak-ng exited with 1"))
    assert type(raised) is EngineError
    assert "model 'voice' failed on its model server" in str(raised)
    assert "espeak-ng exited with 1" in str(raised)


def test_a_wrapped_domain_error_is_unwrapped() -> None:
    cause = UnknownVoiceError("voice y")
    wrapped = RayTaskError("synthesize", "traceback", cause)
    _, raised, _ = _drain(wrapped)
    assert isinstance(raised, UnknownVoiceError)


def test_a_replica_gone_under_the_stream_is_a_crash_to_retry() -> None:
    _, raised, _ = _drain(ActorUnavailableError("Actor is unavailable.", b"\0" * 16))
    assert type(raised) is WorkerCrashedError
    assert "retry the request" in str(raised)
