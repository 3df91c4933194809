"""Domain exceptions. The server maps each to one OpenAI error response, in one place.

AlignserveError
├── InvalidRequest      400: the request cannot be served as written (names the param)
│   └── LimitExceeded   400: it exceeds one of the server's limits (named, as a metric label)
├── Unauthorized        401: a missing or wrong API key
├── ModelNotFound       404: the request names a model this server does not serve
├── Overloaded          429: no room to run or queue the search now (with Retry-After)
├── EngineUnavailable   503: the generator failed or is not running
├── ShuttingDown        503: the server is draining after SIGTERM (with Retry-After)
├── DeadlineExceeded    504: the search ran out of time with nothing to answer
├── RewardUnavailable   503: the reward model failed
└── RewardTimeout       504: the reward model did not answer in time
"""

from __future__ import annotations

# Client text quoted in an error message is cut to this (finding N8: a 100 KB reward name
# came back whole in the 400).
SHOWN_CHARS = 40


def shown(value: object) -> str:
    """Client text in an error message: quoted (repr) and cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


class AlignserveError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # Extra response headers (Retry-After, WWW-Authenticate).
        self.headers = headers or {}


class InvalidRequest(AlignserveError):
    status_code = 400
    error_type = "invalid_request_error"


class LimitExceeded(InvalidRequest):
    """A request over one of the server's limits. ``limit`` names it with a fixed string
    (counted in ``alignserve_limit_rejections_total{limit}``), never with client text."""

    def __init__(self, message: str, *, limit: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.limit = limit


class Unauthorized(AlignserveError):
    status_code = 401
    error_type = "authentication_error"


class Overloaded(AlignserveError):
    status_code = 429
    error_type = "rate_limit_exceeded"


class ModelNotFound(AlignserveError):
    status_code = 404
    error_type = "not_found_error"


class EngineUnavailable(AlignserveError):
    status_code = 503
    error_type = "service_unavailable"


class ShuttingDown(AlignserveError):
    status_code = 503
    error_type = "service_unavailable"


class DeadlineExceeded(AlignserveError):
    status_code = 504
    error_type = "timeout"


class RewardUnavailable(AlignserveError):
    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, *, reason: str = "error", param: str | None = None) -> None:
        super().__init__(message, param=param)
        # Why, as a metric label: "error" (the model or its server failed), "no_score" (a
        # judge's reply held no score), "exception" (a python reward raised), "non_finite"
        # (a NaN or infinite reward), "bad_value" (not a number, or the wrong number of
        # values), "too_long" (the judge's prompt cannot fit its context even shortened).
        self.reason = reason


class RewardTimeout(AlignserveError):
    status_code = 504
    error_type = "timeout"
