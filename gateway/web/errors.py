"""Errors of the web layer: every one maps to one HTTP status and a specific JSON body."""

from __future__ import annotations

from typing import Any

from gateway.errors import GatewayError


class WebError(GatewayError):
    """Root of the web layer's errors; carries what the HTTP response needs.

    Attributes:
        status: HTTP status code sent to the client.
        code: short machine-readable error code (stable; clients match on it, never on text);
            also the :class:`GatewayError` ``reason``.
        message: human-readable explanation.
        param: the query/body parameter at fault, if any.
    """

    status = 500
    default_code = "internal"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message, reason=code or self.default_code)
        self.message = message
        self.code = code or self.default_code
        self.param = param

    def to_json(self) -> dict[str, Any]:
        """Return the JSON error document sent to the client."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param is not None:
            body["param"] = self.param
        return {"error": body}

    def headers(self) -> dict[str, str]:
        """Extra response headers the status calls for (none by default)."""
        return {}


class BadParameter(WebError):
    """A query parameter or body field is missing, malformed or out of range (400)."""

    status = 400
    default_code = "bad_parameter"


class Unauthorized(WebError):
    """Missing or wrong admin bearer token (401)."""

    status = 401
    default_code = "unauthorized"

    def headers(self) -> dict[str, str]:
        """``WWW-Authenticate`` naming the bearer scheme (RFC 6750 §3), with ``invalid_token`` for a wrong one."""
        challenge = 'Bearer realm="civicedge-admin"'
        if self.code == "wrong_token":
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class NotFound(WebError):
    """The addressed resource (device, entity) does not exist (404)."""

    status = 404
    default_code = "not_found"


class Conflict(WebError):
    """The request conflicts with the resource's state, e.g. revoking a revoked device (409)."""

    status = 409
    default_code = "conflict"


class Unavailable(WebError):
    """A backing part the endpoint needs was not configured (503)."""

    status = 503
    default_code = "unavailable"


class RequestTimeout(WebError):
    """The client did not send its request body in time (408)."""

    status = 408
    default_code = "body_timeout"


class BodyTooLarge(WebError):
    """The request body (decoded, for a compressed one) is above the app's ``max_body_bytes`` (413)."""

    status = 413
    default_code = "body_too_large"
