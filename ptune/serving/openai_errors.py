"""Errors on the OpenAI-compatible routes, as OpenAI error objects: `{"error": {"message", "type", "param",
"code"}}`, which OpenAI's clients turn into their exception classes (404 NotFoundError, 400 BadRequestError,
401 AuthenticationError, 503 InternalServerError after Retry-After...). The other routes keep FastAPI's
`{"detail": ...}`; `json_error` picks the form by path, so the body limit and the key check answer each
route in its own form."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

OPENAI_PATHS = ("/v1/models", "/v1/completions", "/v1/chat/completions")
TYPES = {401: "authentication_error", 404: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error", 503: "server_error"}  # status -> error type (others: invalid_request_error)


def is_openai(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPENAI_PATHS)


class OpenAIError(Exception):
    """An error answered as an OpenAI error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_object(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


def json_error(path: str, status: int, message: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI error object on the OpenAI routes, `{"detail": message}` on the others."""
    body = error_object(status, message, code=code) if is_openai(path) else {"detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


def openai_reply(exc: OpenAIError) -> JSONResponse:
    return JSONResponse(error_object(exc.status, exc.message, exc.param, exc.code), status_code=exc.status,
                        headers=exc.headers)


def from_http(exc: HTTPException) -> OpenAIError:
    """An HTTPException raised by the shared service code (404 unknown task, 422 empty input, 503 overload)."""
    detail = exc.detail if isinstance(exc.detail, str) else "; ".join(
        str(p.get("msg", p)) if isinstance(p, dict) else str(p) for p in exc.detail)
    status = 400 if exc.status_code == 422 else exc.status_code
    if exc.status_code == 400 and detail.startswith("There was an error parsing the body"):  # Starlette's words
        return OpenAIError(400, "body: not a JSON object in UTF-8", "body", "invalid_json")
    code = {404: "model_not_found", 503: "overloaded"}.get(status, "invalid_value" if status == 400 else None)
    param = "model" if status == 404 else None
    return OpenAIError(status, detail, param, code, dict(exc.headers or {}) or None)


def from_validation(errors: list[dict]) -> OpenAIError:
    """400 naming the first rejected field of a request body and why; the rejected value is never echoed."""
    if any(error.get("type") == "json_invalid" for error in errors):  # its loc is ("body", character offset)
        return OpenAIError(400, "body: not valid JSON", "body", "invalid_json")
    messages, first = [], None
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        first = first or field
        messages.append(f"{field}: {error.get('msg', 'invalid')}")
    return OpenAIError(400, "; ".join(messages) or "invalid request body", first, "invalid_value")
