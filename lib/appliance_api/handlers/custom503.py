"""/instances/:instance/custom503: the full HTTP response haproxy sends as its 503 page."""
import os
import re

from ..response import Response, text
from ..errors import Conflict, NotFound
from ..layout import Instance
from ..system.locks import instance_lock
from ..system import files

# haproxy's errorfile sends the file as is: a status line, headers, a blank line, a body.
STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9]( [^\r\n]*)?")
HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*")


def put_custom503(request, instance):
    from .. import services  # daemons and psutil: only changes pay for them

    page = request.read_body(int(request.config.number("limits", "custom503_bytes")))
    check_http_response(page)
    instance = Instance(request.config.state_dir, instance)
    with instance_lock(instance, create=True):
        lines = services.replace_file(instance, instance.custom503, page, request.config,
                                      services=["haproxy"])
    return text("OK", *lines, status=201)


def get_custom503(request, instance):
    data = files.read(Instance(request.config.state_dir, instance).custom503)
    if data is None:
        raise NotFound()
    return Response(data, content_type="application/octet-stream")


def delete_custom503(request, instance):
    from .. import services  # daemons and psutil: only changes pay for them

    instance = Instance(request.config.state_dir, instance)
    with instance_lock(instance, create=False):
        if not os.path.exists(instance.custom503):
            raise NotFound()
        lines = services.remove_file(instance, instance.custom503, request.config,
                                     services=["haproxy"])
    return text("OK", *lines)


def check_http_response(page):
    """Conflict unless page is a status line, header lines, a blank line (then a body)."""
    status_line, newline, rest = page.replace(b"\r\n", b"\n").partition(b"\n")
    if not newline or not STATUS_LINE.fullmatch(status_line):
        raise Conflict("Not an HTTP response: the first line must be a status line "
                       "such as 'HTTP/1.1 503 Service Unavailable'")
    head, blank_line, _body = (b"\n" + rest).partition(b"\n\n")
    if not blank_line:
        raise Conflict("Not an HTTP response: no blank line ends the headers")
    for line in head.split(b"\n")[1:]:
        if not HEADER_LINE.fullmatch(line):
            raise Conflict("Not an HTTP response: bad header line %r"
                           % line[:80].decode("latin-1"))
