"""The domain exception tree. `talkies.api.errors` is the one place that maps it to HTTP.

TalkiesError                     500  anything unexpected from the server itself
├── BadRequestError              400  the request cannot be served as sent
│   ├── InvalidAudioError             empty / corrupt / undecodable audio, too long
│   │   └── AudioTooLongError         more samples than the caller's max_seconds (decoding stopped)
│   ├── UnsupportedFormatError        unknown response_format
│   ├── DiarizationError              diarization on a non-stereo file; a bad speaker field or reference
│   ├── UnknownVoiceError             voice not in the model's catalog
│   ├── UnsupportedLanguageError      language code the engine does not know
│   ├── WrongModalityError            a TTS model on an ASR endpoint, or the reverse
│   ├── CapabilityError               e.g. translation on a model that cannot translate
│   ├── InvalidPathError              unsafe /v1/files path
│   └── DownloadError                 file_path URL could not be fetched (or was refused)
├── UnauthorizedError            401  missing / wrong bearer token
├── NotFoundError                404
│   ├── ModelNotFoundError            unknown slug
│   ├── ModelNotLoadedError           DELETE /api/ps on a model that is not resident
│   └── StagedFileNotFoundError       /v1/files path or file_path that does not exist
├── ConflictError                409
│   └── ModelInUseError               DELETE /api/models on a model loaded, in use or being pulled
├── PayloadTooLargeError         413  upload over TALKIES_MAX_UPLOAD_BYTES
├── QueueFullError               429  the model's wait queue is full (carries retry_after)
├── ServiceUnavailableError      503
│   ├── EngineUnavailableError        extra not installed, no GPU, engine not built, snapshot missing
│   ├── QueueTimeoutError             queued longer than TALKIES_QUEUE_TIMEOUT
│   ├── ModelLoadError                load failed or timed out
│   │   └── LoadTimeoutError
│   └── ShuttingDownError             the server is draining after SIGTERM (carries retry_after)
├── ModelTooLargeError           507  the model alone needs more memory than TALKIES_MEMORY_BUDGET allows
├── EngineError                  500  an engine failed while serving a request
│   ├── WorkerCrashedError            the engine's worker process died
│   │   └── UpstreamCrashedError 502  an external server (process executor) died under a request
│   ├── UpstreamError            502  an external server could not be reached or broke the exchange
│   └── EngineTimeoutError       504  the engine made no progress for TALKIES_ENGINE_TIMEOUT
├── ClientDisconnectedError      499  the client went away; its work was cancelled
└── ConfigError                       bad settings or registry: start-up stops (never an HTTP answer)
"""

from __future__ import annotations


class TalkiesError(Exception):
    """Base of every error talkies raises on purpose. `param` names the request field at fault."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequestError(TalkiesError):
    pass


class InvalidAudioError(BadRequestError):
    pass


class AudioTooLongError(InvalidAudioError):
    pass


class UnsupportedFormatError(BadRequestError):
    pass


class DiarizationError(BadRequestError):
    pass


class UnknownVoiceError(BadRequestError):
    pass


class UnsupportedLanguageError(BadRequestError):
    pass


class WrongModalityError(BadRequestError):
    pass


class CapabilityError(BadRequestError):
    pass


class InvalidPathError(BadRequestError):
    pass


class DownloadError(BadRequestError):
    pass


class UnauthorizedError(TalkiesError):
    pass


class NotFoundError(TalkiesError):
    pass


class ModelNotFoundError(NotFoundError):
    pass


class ModelNotLoadedError(NotFoundError):
    pass


class StagedFileNotFoundError(NotFoundError):
    pass


class ConflictError(TalkiesError):
    pass


class ModelInUseError(ConflictError):
    pass


class PayloadTooLargeError(TalkiesError):
    pass


class QueueFullError(TalkiesError):
    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailableError(TalkiesError):
    pass


class EngineUnavailableError(ServiceUnavailableError):
    pass


class QueueTimeoutError(ServiceUnavailableError):
    pass


class ModelLoadError(ServiceUnavailableError):
    pass


class LoadTimeoutError(ModelLoadError):
    pass


class ShuttingDownError(ServiceUnavailableError):
    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelTooLargeError(TalkiesError):
    """The model can never fit the memory budget (its footprint, or with the models it may not evict)."""


class EngineError(TalkiesError):
    pass


class WorkerCrashedError(EngineError):
    pass


class UpstreamCrashedError(WorkerCrashedError):
    pass


class UpstreamError(EngineError):
    pass


class EngineTimeoutError(EngineError):
    """No segment, chunk or result for TALKIES_ENGINE_TIMEOUT seconds; the worker was killed."""


class ClientDisconnectedError(TalkiesError):
    pass


class ConfigError(TalkiesError):
    """Raised at start-up only; the CLI prints the message and exits non-zero."""
