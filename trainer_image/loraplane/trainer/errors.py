"""Errors the trainer reports to its caller, each with its exit code (see loraplane.api.exit_codes)."""

from __future__ import annotations

from loraplane.api.exit_codes import ExitCode


class TrainerError(Exception):
    """A failure with a clear message for the user and a documented exit code."""

    code: ExitCode = ExitCode.UNEXPECTED
    reason: str = "Unexpected"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class InvalidSpec(TrainerError):
    code, reason = ExitCode.INVALID_SPEC, "InvalidSpec"


class InvalidData(TrainerError):
    code, reason = ExitCode.INVALID_DATA, "DataError"


class ModelNotFound(TrainerError):
    code, reason = ExitCode.MODEL_NOT_FOUND, "ModelNotFound"


class RevisionNotFound(TrainerError):
    code, reason = ExitCode.REVISION_NOT_FOUND, "RevisionNotFound"


class AuthFailed(TrainerError):
    code, reason = ExitCode.AUTH_FAILED, "AuthFailed"


class NetworkUnavailable(TrainerError):
    code, reason = ExitCode.NETWORK_UNAVAILABLE, "NetworkUnavailable"


class RemoteCodeRefused(TrainerError):
    code, reason = ExitCode.REMOTE_CODE_REFUSED, "RemoteCodeRefused"


class OutOfMemory(TrainerError):
    code, reason = ExitCode.OUT_OF_MEMORY, "OutOfMemory"


class Interrupted(TrainerError):
    code, reason = ExitCode.INTERRUPTED, "Interrupted"
