"""Domain exceptions. The server maps each to one OpenAI error response, in one place.

AlignserveError
├── InvalidRequest      400: the request cannot be served as written (names the param)
├── ModelNotFound       404: the request names a model this server does not serve
├── EngineUnavailable   503: the generator failed or is not running
└── RewardUnavailable   503: the reward model failed
"""

from __future__ import annotations


class AlignserveError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(AlignserveError):
    status_code = 400
    error_type = "invalid_request_error"


class ModelNotFound(AlignserveError):
    status_code = 404
    error_type = "not_found_error"


class EngineUnavailable(AlignserveError):
    status_code = 503
    error_type = "service_unavailable"


class RewardUnavailable(AlignserveError):
    status_code = 503
    error_type = "service_unavailable"
