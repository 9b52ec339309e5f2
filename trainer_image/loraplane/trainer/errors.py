"""Errors the trainer reports to its caller, each with its exit code (see loraplane.api.exit_codes).

The reason a failure reports is the contract's, from the exit code (loraplane.api.conditions.EXIT_REASONS).
"""

from __future__ import annotations

from typing import ClassVar

from loraplane.api.conditions import exit_reason
from loraplane.api.exit_codes import ExitCode


class TrainerError(Exception):
    """A failure with a clear message for the user and a documented exit code."""

    code: ClassVar[ExitCode] = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field

    @property
    def reason(self) -> str:
        return exit_reason(self.code)


class InvalidSpec(TrainerError):
    code = ExitCode.INVALID_SPEC


class InvalidData(TrainerError):
    code = ExitCode.INVALID_DATA


class ModelNotFound(TrainerError):
    code = ExitCode.MODEL_NOT_FOUND


class RevisionNotFound(TrainerError):
    code = ExitCode.REVISION_NOT_FOUND


class AuthFailed(TrainerError):
    code = ExitCode.AUTH_FAILED


class NetworkUnavailable(TrainerError):
    code = ExitCode.NETWORK_UNAVAILABLE


class RemoteCodeRefused(TrainerError):
    code = ExitCode.REMOTE_CODE_REFUSED


class OutOfMemory(TrainerError):
    code = ExitCode.OUT_OF_MEMORY


class Interrupted(TrainerError):
    code = ExitCode.INTERRUPTED


class PushFailed(TrainerError):
    code = ExitCode.PUSH_FAILED
