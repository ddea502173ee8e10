"""Run a WSGI application once as a CGI script (standard library only).

What wsgiref's CGIHandler does for this API, without its imports: they
cost every request a few milliseconds (wsgiref's headers module alone
pulls in `re` before the routing table needs it). The application never
raises (app.handle turns every failure into an answer) and always returns
one body, so this is all there is to it.
"""
import os
import sys


def run(application):
    environ = dict(os.environ)
    environ.update({
        "wsgi.input": sys.stdin.buffer, "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if environ.get("HTTPS", "off") in ("on", "1") else "http",
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": True})
    answer = []

    def start_response(status, headers, exc_info=None):
        answer[:] = [status, headers]

    body = b"".join(application(environ, start_response))
    status, headers = answer
    head = "Status: %s\r\n%s\r\n" % (status, "".join("%s: %s\r\n" % h for h in headers))
    out = sys.stdout.buffer
    out.write(head.encode("latin-1") + body)
    out.flush()
