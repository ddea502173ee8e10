"""Lying and unusual request framing through lighttpd (issue 5), in raw HTTP/1.1
over TLS with the controller's certificate: a Content-Length shorter or longer
than the body, none at all, a chunked body, and both at once.

For each: never a 500; the stored file is unchanged or exactly the body the
request framed; no temporary file is left; lighttpd still answers afterwards.
"""
import os
import time
import uuid

import pytest

from e2e.conftest import pki  # noqa: F401  (session fixture)

from . import figures
from .lighttpd_site import (cgi_processes, client_context, leftover_temporaries, read_bytes,
                            read_http_response, start_site, stop_site, tls_connection)


def page(tag):
    return ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n"
            "sorry page %s, with a body long enough to cut\n" % tag).encode()


@pytest.fixture(scope="module")
def site(tmp_path_factory, pki):  # noqa: F811
    api = start_site(str(tmp_path_factory.mktemp("headers-site")), pki)
    try:
        yield api
    finally:
        stop_site(api)


@pytest.fixture
def target(site):
    """An instance whose custom503 page is "old"; (path, its file, the old page)."""
    instance = str(uuid.uuid4())
    path = "/instances/%s/custom503" % instance
    old = page("old")
    reply = site.put(path, old)
    assert reply.status == 201, reply
    yield path, os.path.join(site.instances_dir, instance, "custom503.http"), old
    site.delete("/instances/" + instance)


def head(path, *headers):
    return ("PUT %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n"
            % (path, "".join(h + "\r\n" for h in headers))).encode()


def chunked(body, sizes):
    """body in chunks of the given sizes (the rest in one more), then the last chunk."""
    out, start = b"", 0
    for size in list(sizes) + [len(body)]:
        piece = body[start:start + size]
        start += len(piece)
        if piece:
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def exchange(site, data, wait=10, close_early=False):
    """Send data on a fresh TLS connection; (status, body) of the first answer, status 0
    when none came within wait seconds (or when the client closed right away)."""
    conn = tls_connection(site, client_context(site.ca, site.client_cert), timeout=wait)
    try:
        conn.sendall(data)
        if close_early:
            return 0, b""
        status, _headers, body, _raw = read_http_response(conn, wait)
        return status, body
    finally:
        conn.close()


def still_answers(site):
    status, body = exchange(site, b"GET /instances HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Connection: close\r\n\r\n")
    return status == 200


def check(site, stored_path, old, new, status, expect):
    """The common proof for one request: no 500, stored file old or exactly new,
    no temporary, lighttpd still answers."""
    figures.add("inputs")
    if status == 500:
        figures.add("server_errors")
    assert status != 500
    assert status in expect, status
    stored = read_bytes(stored_path)
    corrupted = stored not in (old, new)
    figures.add("files_corrupted", int(corrupted))
    assert not corrupted, stored
    assert leftover_temporaries(os.path.dirname(stored_path)) == []
    assert still_answers(site)
    return stored


def test_content_length_shorter_than_the_body(site, target):
    """lighttpd takes Content-Length bytes as the body (the rest is the start of a
    next request): the page stored is exactly what the header framed."""
    path, stored_path, old = target
    new = page("short")
    framed = new[:-10]  # still a valid page: the cut is in its body
    status, body = exchange(site, head(path, "Content-Length: %d" % len(framed)) + new, wait=10)
    assert check(site, stored_path, old, framed, status, {201}) == framed
    assert body == b"OK\n"


def test_content_length_shorter_cutting_the_headers(site, target):
    path, stored_path, old = target
    new = page("cut")
    framed = new[:20]  # "HTTP/1.0 503 Service": no blank line, not a page
    status, body = exchange(site, head(path, "Content-Length: %d" % len(framed)) + new)
    assert check(site, stored_path, old, framed, status, {409}) == old
    assert body.startswith(b"Not an HTTP response")


@pytest.mark.parametrize("how", ["client-closes", "client-times-out"])
def test_content_length_longer_than_the_body(site, target, how):
    """lighttpd buffers the whole body before it starts the script: a body that never
    comes never reaches the API, and the stored page stays."""
    path, stored_path, old = target
    new = page("long")
    data = head(path, "Content-Length: %d" % (len(new) + 100)) + new
    if how == "client-closes":
        status, _ = exchange(site, data, close_early=True)
    else:
        started = time.monotonic()
        status, _ = exchange(site, data, wait=2)
        assert time.monotonic() - started >= 1.9  # no answer: the server still waits
    assert not cgi_processes(site.process.pid)
    assert check(site, stored_path, old, None, status, {0}) == old


def test_put_without_content_length(site, target):
    """No Content-Length and no chunking: an empty body to lighttpd, so the API
    refuses it as not a page (or lighttpd asks for a length); nothing changes."""
    path, stored_path, old = target
    new = page("missing")
    status, _ = exchange(site, head(path, "Connection: close") + new)
    assert check(site, stored_path, old, None, status, {400, 409, 411}) == old


@pytest.mark.parametrize("sizes", [pytest.param([], id="one-chunk"),
                                   pytest.param([1, 7, 30, 2], id="many-chunks")])
def test_chunked_body(site, target, sizes):
    path, stored_path, old = target
    new = page("chunked-%d" % len(sizes))
    status, body = exchange(site, head(path, "Transfer-Encoding: chunked") + chunked(new, sizes))
    assert check(site, stored_path, old, new, status, {201}) == new
    assert body == b"OK\n"


def test_chunked_and_content_length_together(site, target):
    """The classic smuggling shape: lighttpd must refuse it or use one framing; the
    stored page is the old one or exactly the new one."""
    path, stored_path, old = target
    new = page("both")
    data = head(path, "Content-Length: 10", "Transfer-Encoding: chunked") + chunked(new, [9])
    status, _ = exchange(site, data)
    check(site, stored_path, old, new, status, {201, 400, 409, 411})


@pytest.mark.parametrize("value", ["abc", "-5", "99999999999999999999999", "12, 12"])
def test_invalid_content_length(site, target, value):
    path, stored_path, old = target
    new = page("invalid")
    status, _ = exchange(site, head(path, "Content-Length: %s" % value, "Connection: close") + new,
                         wait=5)
    assert check(site, stored_path, old, None, status, {0, 400, 411, 413}) == old


def test_content_length_over_the_limit(site, target):
    """Over server.max-request-size (1 MiB): lighttpd answers 413 itself, at once."""
    path, stored_path, old = target
    new = page("huge")
    status, _ = exchange(site, head(path, "Content-Length: %d" % (2 * 1024 * 1024)) + new, wait=5)
    assert check(site, stored_path, old, None, status, {413}) == old
