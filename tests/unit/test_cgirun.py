"""The CGI entry script as lighttpd runs it: environment in, body on stdin,
a CGI answer (Status line, headers, blank line, body) on stdout."""
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "cgi-bin", "appliance-api")
INSTANCE = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"
PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"


def cgi(tmp_path, method, path, body=b""):
    config = tmp_path / "api.ini"
    config.write_text("[paths]\nstate_dir = %s\n[network]\nmanage = no\n" % (tmp_path / "state"))
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
               "SSL_CLIENT_VERIFY": "SUCCESS", "APPLIANCE_API_CONFIG": str(config)}
    result = subprocess.run([sys.executable, SCRIPT], env=environ, input=body,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, cwd="/")
    head, _, answer = result.stdout.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), answer


def test_put_reads_the_body_from_stdin_and_get_returns_it(tmp_path):
    head, body = cgi(tmp_path, "PUT", "/instances/%s/custom503" % INSTANCE, PAGE)
    assert head[0] == "Status: 201 Created" and body == b"OK\n"
    head, body = cgi(tmp_path, "GET", "/instances/%s/custom503" % INSTANCE)
    assert head[0] == "Status: 200 OK" and body == PAGE
    assert "Content-Length: %d" % len(PAGE) in head


def test_head_has_the_headers_and_no_body(tmp_path):
    cgi(tmp_path, "PUT", "/instances/%s/custom503" % INSTANCE, PAGE)
    head, body = cgi(tmp_path, "HEAD", "/instances/%s/custom503" % INSTANCE)
    assert head[0] == "Status: 200 OK" and body == b""
    assert "Content-Length: %d" % len(PAGE) in head


def test_an_unknown_url_is_403_with_its_reason(tmp_path):
    head, body = cgi(tmp_path, "GET", "/nowhere")
    assert (head[0], body) == ("Status: 403 Forbidden", b"Invalid Request\n")
