"""API-key check (`ptune serve --api-key`, or PTUNE_API_KEY) as a pure ASGI middleware: every route under
/v1 needs `Authorization: Bearer <key>`; a missing or wrong key gets 401 before the body is read. The key is
compared with `hmac.compare_digest`, whose time does not depend on where the given key first differs.
/health, /metrics, /docs and the playground page stay open (probes and scrapers carry no key); the
playground asks for the key when /v1 answers 401."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from ptune.serving.openai_errors import json_error


class BearerAuth:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.key = app, api_key.encode()

    def allowed(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/v1" or path.startswith("/v1/")) or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        has_header = b"authorization" in dict(scope.get("headers") or [])
        message = ("Incorrect API key provided" if has_header else
                   "Missing API key: send `Authorization: Bearer <key>` (the key given to ptune serve --api-key)")
        reply = json_error(path, 401, message, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
        await reply(scope, receive, send)
