"""Errors in the shape OpenAI's API documents: `{"error": {"message", "type", "param", "code"}}` with a status."""

from __future__ import annotations

from typing import Any

from charlm.errors import CharlmError, one_line


class APIError(Exception):
    """A request the server refuses or could not finish: the HTTP status and the body a client reads."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r})"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def from_domain(exc: CharlmError, param: str | None = None) -> APIError:
    """A charlm error met while checking a request (an option out of range, a prompt the tokenizer refuses)."""
    return bad_request(str(exc), param=param)


def not_found(path: str) -> APIError:
    return APIError(
        404,
        f"there is no route {path}; this server answers POST /v1/completions, GET /v1/models, GET /health and GET /",
        code="not_found",
    )


def server_error(message: str = "the server failed while decoding; the error is in its log") -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")


def shutting_down() -> APIError:
    return APIError(503, "the server is shutting down; retry on another instance", type="server_error", code="shutdown")
