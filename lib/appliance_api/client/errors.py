"""The client's errors: ApiError for an answer the API gave (one class per
status of the contract), ConnectionFailed for none, ClusterFailed for a
pair's call. Their names are the client's own (Api...), apart from the
server's HTTP errors in appliance_api.errors."""


class ClientError(Exception):
    """Anything this module raises about an appliance."""


class ApiError(ClientError):
    """The appliance answered with an error status. `reason` is the first
    line of the body (the API's one-line reason), `detail` the other lines
    (a checker's output, one line per bad parameter)."""

    def __init__(self, status, reason, detail="", request=""):
        super().__init__(status, reason, detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.request = request

    def __str__(self):
        text = "%d %s" % (self.status, self.reason)
        if self.request:
            text = "%s: %s" % (self.request, text)
        return text + ("\n" + self.detail if self.detail else "")


class ApiInvalidRequest(ApiError):
    """403: a URL, method or client the API does not serve."""


class ApiNotFound(ApiError):
    """404."""


class ApiConflict(ApiError):
    """409: the upload is unusable (a refused config or certificate); nothing changed."""


class ApiTooLarge(ApiError):
    """413: over the API's size limit for that resource."""


class ApiServerError(ApiError):
    """500: the API could not do its job."""


class ApiBusy(ApiError):
    """503: over the change cap, or a cluster transition runs. Nothing
    changed; `retry_after` is the seconds the appliance asked us to wait."""

    def __init__(self, status, reason, detail="", request="", retry_after=None):
        super().__init__(status, reason, detail, request)
        self.retry_after = retry_after


ERRORS = {403: ApiInvalidRequest, 404: ApiNotFound, 409: ApiConflict, 413: ApiTooLarge, 500: ApiServerError}


class ConnectionFailed(ClientError):
    """No answer from the appliance, after the retries the request allowed."""

    def __init__(self, reason, request="", attempts=1):
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.attempts = attempts

    def __str__(self):
        text = "%s: %s" % (self.request, self.reason) if self.request else self.reason
        return text + (" (%d attempts)" % self.attempts if self.attempts > 1 else "")


class ClusterFailed(ClientError):
    def __init__(self, result):
        super().__init__(result.summary())
        self.result = result
