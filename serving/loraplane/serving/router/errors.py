"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the matching HTTP status."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from starlette.responses import JSONResponse

_ID_PREFIX = secrets.token_hex(8)  # this process's
_ID_SEQUENCE = itertools.count()


def new_request_id() -> str:
    """32 hex digits, unique in this router process and, by its random prefix, across its replicas and restarts.

    Drawn from a counter: secrets' random bytes were a getrandom() system call on every request.
    """
    return f"{_ID_PREFIX}{next(_ID_SEQUENCE):016x}"


class RouterError(Exception):
    """Raised anywhere on the request path; rendered by the app's exception handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, request_id: str | None = None) -> JSONResponse:
        headers = {**self.headers, "x-request-id": request_id or new_request_id()}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None) -> RouterError:
    return RouterError(400, message, param=param, code="invalid_value" if param else "invalid_request")


def model_not_found(model: str) -> RouterError:
    return RouterError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def unauthorized(message: str = "Missing or invalid API key (Authorization: Bearer <key>).") -> RouterError:
    return RouterError(401, message, type="authentication_error", code="invalid_api_key")


def forbidden(message: str) -> RouterError:
    return RouterError(403, message, type="permission_error", code="forbidden")


def too_large(limit: int) -> RouterError:
    return RouterError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")


def unavailable(message: str, retry_after: int) -> RouterError:
    return RouterError(
        503, message, type="service_unavailable", code="no_healthy_replica", headers={"Retry-After": str(retry_after)}
    )


def upstream_timeout(seconds: float) -> RouterError:
    return RouterError(504, f"The model server did not answer within {seconds:g}s.", type="timeout", code="timeout")


def bad_gateway(message: str) -> RouterError:
    return RouterError(502, message, type="upstream_error", code="upstream_error")
