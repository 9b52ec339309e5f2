"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the matching HTTP status.

The one place they are made: the request path renders a `RouterError` itself (`RouterError.response`), every
other route raises it and the app's handlers (`add_handlers`) render it, or a bug as a 500 of the same shape.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("loraplane.router")

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


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: bytes) -> M:
    """A JSON request body as `model`; 400 naming the first invalid field (its wire name)."""
    try:
        return model.model_validate(json.loads(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise bad_request(f"{field}: {first['msg']}", field) from exc
    except ValueError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}") from exc


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


def not_found(message: str) -> RouterError:
    return RouterError(404, message, code="not_found")


def conflict(message: str) -> RouterError:
    return RouterError(409, message, code="conflict")


def upstream_timeout(seconds: float) -> RouterError:
    return RouterError(504, f"The model server did not answer within {seconds:g}s.", type="timeout", code="timeout")


def internal_error(exc: BaseException) -> RouterError:
    """A bug: still answered in OpenAI's shape; the log line with the traceback has the request id."""
    return RouterError(500, f"Internal router error ({type(exc).__name__}).", type="server_error")


async def render_router_error(request: Request, exc: RouterError) -> Response:
    return exc.response(request.headers.get("x-request-id"))


async def render_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s", request.url.path, exc_info=exc)
    return internal_error(exc).response(request.headers.get("x-request-id"))


def add_handlers(app: FastAPI) -> None:
    """Render what the routes raise: a `RouterError` as itself, anything else as a 500 (logged)."""
    app.exception_handler(RouterError)(render_router_error)
    app.exception_handler(Exception)(render_unexpected)
