"""The WSGI application: match a route, call its handler, turn errors into responses.

This is the one place where exceptions become HTTP answers: an HTTPError
becomes its code and one-line reason; anything else is a 500 whose traceback
goes to wsgi.errors (lighttpd's error log), never to the client.
"""
import sys

from . import config as config_module
from .errors import (HTTPError, InvalidRequest, RequestEntityTooLarge,
                     ServerError, from_system)
from .response import Response
from .routes import ROUTES, match

STATUS_LINES = {200: "200 OK", 201: "201 Created", 403: "403 Forbidden",
                404: "404 Not Found", 409: "409 Conflict",
                413: "413 Request Entity Too Large", 500: "500 Internal Server Error",
                503: "503 Service Unavailable"}
# Methods that only read: uncapped. Every other method changes the appliance
# and first takes one of the appliance-wide change slots (system/slots.py).
READ_METHODS = ("GET", "HEAD")


class Request:
    def __init__(self, environ, config):
        self.environ = environ
        self.config = config
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.path = environ.get("PATH_INFO", "") or "/"

    def header(self, name):
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    def read_body(self, limit):
        """The request body, refused with 413 when its declared length is over limit."""
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length")
        if length < 0:
            raise InvalidRequest("Invalid Content-Length")
        if length > limit:
            raise RequestEntityTooLarge(detail="Limit for this resource: %d bytes" % limit)
        if length == 0:
            return b""
        stream = self.environ["wsgi.input"]
        chunks, remaining = [], length
        while remaining > 0:
            chunk = stream.read(min(remaining, 65536))
            if not chunk:
                raise InvalidRequest("Request body shorter than its Content-Length")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


def find_route(method, path):
    """(handler name, URL parameters) for a request; InvalidRequest when none matches."""
    if method == "HEAD":
        method = "GET"
    for route_method, pattern, handler in ROUTES:
        if route_method == method:
            params = match(pattern, path)
            if params is not None:
                return handler, params
    raise InvalidRequest()


def call_handler(handler, request, params):
    module_name, function_name = handler.split(":")
    name = "appliance_api.handlers." + module_name
    __import__(name)  # importlib.import_module, without importing importlib
    return getattr(sys.modules[name], function_name)(request, **params)


def check_client(environ, config):
    if not config.flag("api", "require_client_certificate"):
        return
    if environ.get("SSL_CLIENT_VERIFY") != "SUCCESS":
        raise InvalidRequest("Client certificate required")
    allowed = config.words("api", "allowed_client_names")
    if allowed and environ.get("SSL_CLIENT_S_DN_CN") not in allowed:
        raise InvalidRequest("Client certificate not allowed")


def handle(environ, config=None):
    try:
        config = config or config_module.load(environ)
        check_client(environ, config)
        _apply_test_settings(config)
        request = Request(environ, config)
        handler, params = find_route(request.method, request.path)
        if request.method in READ_METHODS:
            return call_handler(handler, request, params)
        from .gate import change_gate

        with change_gate(config):
            return call_handler(handler, request, params)
    except HTTPError as error:
        return _answer(environ, error)
    except Exception as error:
        # system/'s own errors: imported only here, so a read does not pay for them.
        from .system import Busy, MachineError

        if isinstance(error, (MachineError, Busy)):
            return _answer(environ, from_system(error))
        import traceback  # 5 ms at start-up: only failures pay for it

        _log(environ, "appliance-api: %s %s failed:\n%s"
             % (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), traceback.format_exc()))
        return Response(ServerError(_describe(error)).body(), 500)


def _answer(environ, error):
    """An HTTPError as the contract's answer; a 500's reason goes to the log too."""
    if error.code == 500:
        _log(environ, "appliance-api: %s %s: %s\n"
             % (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), error.reason))
    return Response(error.body(), error.code, headers=error.headers)


def make_application(config=None):
    """A WSGI callable. Tests pass a Config; the CGI script reads the file named in the environment."""
    def application(environ, start_response):
        response = handle(environ, config)
        body = b"" if environ.get("REQUEST_METHOD") == "HEAD" else response.body
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store")] + response.headers
        start_response(STATUS_LINES.get(response.status, "%d Error" % response.status), headers)
        return [body]
    return application


application = make_application()


def _apply_test_settings(config):
    pause = config.number("testing", "pause_before_rename")
    if pause:
        from .system import files
        files.PAUSE_BEFORE_RENAME = pause


def _describe(error):
    """One line for an unexpected failure: an OSError names its file, nothing else leaks."""
    if isinstance(error, OSError) and error.strerror:
        where = " (%s)" % error.filename if error.filename else ""
        return "Internal error: %s%s" % (error.strerror, where)
    return "Internal error: %s" % type(error).__name__


def _log(environ, message):
    stream = environ.get("wsgi.errors") or sys.stderr
    stream.write(message)
    stream.flush()
