"""Who may use `serve`: loopback binds need nothing; any other bind needs a token, checked in constant time.

API clients send `Authorization: Bearer TOKEN`; a browser on the pages gets a Basic prompt whose
password is the token (any user name).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json

from runner.errors import RunnerError


class TokenRequired(RunnerError):
    """`serve` on a non-loopback address without a token: `host` names it."""

    def __init__(self, host: str):
        self.host = host
        super().__init__(f"serve on {host} needs --token (or SCRIPTORIUM_API_TOKEN): only loopback addresses "
                         f"are served without one")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; 0.0.0.0, :: and every other address are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not token and not is_loopback(host):
        raise TokenRequired(host)


def _digest(value: str | bytes) -> bytes:
    """Tokens are compared as SHA-256 digests, so neither content nor length shows in the timing."""
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


def presented_token(authorization: str) -> bytes | None:
    """The token in a `Bearer X` or `Basic base64(user:X)` header, else None."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            return None
    return None


class TokenAuth:
    """Pure ASGI middleware: every HTTP request must carry the token; 401 before any body is read."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = _digest(token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._allowed(scope):
            return await self.app(scope, receive, send)
        if scope["path"].startswith("/v1/"):
            body = json.dumps({"error": {"message": "missing or wrong bearer token", "type": "invalid_request_error",
                                         "param": None, "code": "invalid_api_key"}}).encode()
            headers = [(b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="scriptorium"')]
        else:
            body = b"Scriptorium needs its token: any user name, the token as password.\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"),
                       (b"www-authenticate", b'Basic realm="scriptorium", charset="UTF-8"')]
        await send({"type": "http.response.start", "status": 401,
                    "headers": [*headers, (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        given = presented_token(header)
        return given is not None and hmac.compare_digest(_digest(given), self.expected)
