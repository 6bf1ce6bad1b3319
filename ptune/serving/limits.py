"""Request body size limit as a pure ASGI middleware: 413 with a message, before the body is parsed.

Checks the Content-Length header, then reads the body (chunked bodies have no header) and stops at the
limit; the app gets the body replayed. Hand-written because it is a few lines and Starlette/FastAPI
ship no body-size limit (uvicorn has none either; a reverse proxy's limit is the first line)."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ptune.serving.openai_errors import json_error


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _reply(self, scope: Scope) -> JSONResponse:
        """413, as an OpenAI error object on the OpenAI routes (`openai_errors.json_error`)."""
        return json_error(scope.get("path", ""), 413,
                          f"request body larger than {self.max_bytes} bytes (--max-body-bytes)", "request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reply(scope)(scope, receive, send)
            return
        body, more = b"", True
        while more:  # read it all here (at most max_bytes): FastAPI turns errors raised mid-read into 400
            message = await receive()
            if message["type"] != "http.request":  # client gone
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._reply(scope)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
