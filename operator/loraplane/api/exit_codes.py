"""The trainer's exit-code contract. The operator builds the Job's podFailurePolicy from it.

| code | meaning | retry? |
|---|---|---|
| 0  | success (adapter + result.json written; the evaluation gate may still have failed, see result.json) | - |
| 1  | unexpected error (a bug, or an environment problem not listed here) | yes, bounded |
| 10 | invalid training spec | no |
| 11 | invalid or unreadable data | no |
| 12 | model not found | no |
| 13 | model revision not found | no |
| 14 | hub authentication failed (missing or bad token, gated model) | no |
| 15 | hub unreachable (network) | yes |
| 16 | model needs remote code and trustRemoteCode is false | no |
| 17 | out of memory | no (change resources) |
| 18 | interrupted (SIGTERM): checkpoint saved, a rerun resumes | yes, does not count |
| 19 | the adapter could not be pushed to spec.output.uri (registry unreachable, login refused) | yes |
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCESS = 0
    UNEXPECTED = 1
    INVALID_SPEC = 10
    INVALID_DATA = 11
    MODEL_NOT_FOUND = 12
    REVISION_NOT_FOUND = 13
    AUTH_FAILED = 14
    NETWORK_UNAVAILABLE = 15
    REMOTE_CODE_REFUSED = 16
    OUT_OF_MEMORY = 17
    INTERRUPTED = 18
    PUSH_FAILED = 19


# Codes after which retrying the same spec cannot help.
PERMANENT = frozenset(
    {
        ExitCode.INVALID_SPEC,
        ExitCode.INVALID_DATA,
        ExitCode.MODEL_NOT_FOUND,
        ExitCode.REVISION_NOT_FOUND,
        ExitCode.AUTH_FAILED,
        ExitCode.REMOTE_CODE_REFUSED,
        ExitCode.OUT_OF_MEMORY,
    }
)
