"""The errors the service raises on purpose. Each carries the HTTP status and a stable code
that clients can branch on; entrypoints turn them into `{"error": {"code", "message"}}`."""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details: dict[str, str] = {}  # more for the client, e.g. the running turn's URLs
        if code:
            self.code = code

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class ConfigError(ServiceError):
    code = "misconfigured"


class InvalidRequest(ServiceError):
    status = 400
    code = "invalid_request"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class TurnInProgress(ServiceError):
    status = 409
    code = "turn_in_progress"


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"


class LockLost(ServiceError):
    """The turn outlived its lock and someone else took it: its result is not saved."""

    status = 409
    code = "lock_lost"


class AgentFailed(ServiceError):
    status = 502
    code = "agent_failed"


class TurnTimeout(ServiceError):
    status = 504
    code = "turn_timeout"


class StateUnavailable(ServiceError):
    status = 503
    code = "state_unavailable"


class AuthUnavailable(ServiceError):
    """The identity provider's keys could not be fetched: not the caller's fault."""

    status = 503
    code = "auth_unavailable"


class SandboxUnavailable(ServiceError):
    status = 503
    code = "sandbox_unavailable"
