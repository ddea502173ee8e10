"""HTTP errors as exceptions, in the manner of werkzeug.

A handler raises ``NotFound()`` or ``Conflict("No RSA key found", output)``;
``app.application`` is the one place that turns them into responses.
The status codes and default bodies are the contract's
(../shared/spec/api-contract.md, "Status codes").
"""


class HTTPError(Exception):
    code = 500
    reason = "Internal Server Error"

    def __init__(self, reason=None, detail=""):
        super().__init__(reason or self.reason)
        if reason:
            self.reason = reason
        self.detail = detail
        self.headers = []

    def body(self):
        text = self.reason + "\n"
        if self.detail:
            text += self.detail.rstrip("\n") + "\n"
        return text


class InvalidRequest(HTTPError):
    """URL or method not recognised, or a client the API does not serve."""
    code = 403
    reason = "Invalid Request"


class NotFound(HTTPError):
    code = 404
    reason = "Not Found"


class Conflict(HTTPError):
    """The uploaded data is unusable; the detail carries a checker's output."""
    code = 409
    reason = "Conflict"


class RequestEntityTooLarge(HTTPError):
    code = 413
    reason = "Request Entity Too Large"


class ServerError(HTTPError):
    """The API could not do its job; the reason is one line an operator can act on."""
    code = 500


class ServiceUnavailable(HTTPError):
    """Try again later: the appliance is busy, or a cluster transition runs.
    Nothing was changed; Retry-After says when to come back."""
    code = 503
    reason = "Service Unavailable"

    def __init__(self, reason=None, detail="", retry_after=1):
        super().__init__(reason, detail)
        self.headers = [("Retry-After", str(int(retry_after)))]


class ClusterTransition(ServiceUnavailable):
    """A change to an instance while the topology changes (ha-and-listeners.md)."""

    def __init__(self):
        super().__init__("Cluster transition in progress", retry_after=2)


def from_system(failure):
    """The HTTP error a system/ failure is answered with (system.MachineError:
    500 with its line; system.Busy: 503 with its Retry-After)."""
    from .system import Busy

    if isinstance(failure, Busy):
        return ServiceUnavailable(failure.reason, failure.detail, failure.retry_after)
    return ServerError(str(failure))
