"""Errors of the /v1 routes in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         415: "invalid_request_error", 503: "server_error", 504: "timeout"}


class ApiError(Exception):
    """A request the API answers with `status` and a one-line `reason` (and the job id when there is one)."""

    def __init__(self, status: int, reason: str, code: str | None = None, param: str | None = None,
                 job_id: str | None = None):
        self.status, self.reason, self.code, self.param, self.job_id = status, reason, code, param, job_id
        super().__init__(f"{status}: {reason}")


def error_response(exc: ApiError) -> JSONResponse:
    body = {"error": {"message": exc.reason, "type": TYPES.get(exc.status, "server_error"),
                      "param": exc.param, "code": exc.code}}
    if exc.job_id:
        body["job_id"] = body["error"]["job_id"] = exc.job_id
    headers = {"retry-after": "5"} if exc.status == 503 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def api_error_handler(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc)
