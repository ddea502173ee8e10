"""Plumbing shared by the through-lighttpd proofs (test_concurrency, test_crashes,
test_headers, test_access): a site of our own served by a real `lighttpd -D`,
reached with curl (e2e.helpers.Api) or a raw TLS socket, and the haproxy/stunnel
processes it leaves on the machine."""
import os
import signal
import socket
import ssl
import sys
import time

import psutil

import devsite  # tools/devsite.py (the proof conftest puts tools/ on sys.path)
import pki as pki_tool  # tools/pki.py

from e2e.helpers import Api, daemons_under, free_port

CGI_MARKER = os.path.join("cgi-bin", "appliance-api")


def start_site(folder, pki, api_settings=None, state_dir=None):
    """lighttpd serving the API on 127.0.0.1 (a free port) from folder; an Api.

    Daemons get 10 s to start: 50 Python CGI processes on a 2-core machine are
    slow. state_dir lets two sites (say, one with a test pause) share one state.
    """
    settings = {"daemons": {"start_timeout": "10", "stop_timeout": "3"}}
    if state_dir:
        settings["paths"] = {"state_dir": state_dir}
    for section, values in (api_settings or {}).items():
        settings.setdefault(section, {}).update(values)
    for attempt in range(3):
        port = free_port()
        conf = devsite.write_site(folder, ["127.0.0.1"], port, pki.dir, sys.executable,
                                  api_settings=settings)
        try:
            process = devsite.start_lighttpd(conf, "127.0.0.1", port)
        except RuntimeError:
            if attempt == 2:
                raise
            continue
        api = Api(folder, port, pki, process)
        if state_dir:
            api.state_dir = state_dir
            api.instances_dir = os.path.join(state_dir, "instances")
        # The port was free a moment ago: make sure it is our lighttpd that answers
        # (our CA is unique, so another server fails curl's verification).
        time.sleep(0.1)
        if process.poll() is None and api.run_curl(api.url("/instances")).returncode == 0:
            return api
        devsite.stop_lighttpd(process)
        if attempt == 2:
            raise RuntimeError("lighttpd for %s did not serve on port %d" % (folder, port))
    raise AssertionError("unreachable")


def stop_site(api):
    """Delete what the API made (the clean way), stop lighttpd, then kill any
    daemon left under the state folder (there should be none)."""
    if api.process.poll() is None:
        try:
            for instance in api.instances():
                api.delete("/instances/" + instance)
        except Exception:
            pass
        devsite.stop_lighttpd(api.process)
    for leftover in daemons_under(api.state_dir):
        try:
            leftover.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def cgi_processes(lighttpd_pid):
    """Live CGI processes (the API script) under a lighttpd."""
    try:
        children = psutil.Process(lighttpd_pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and \
                    any(CGI_MARKER in word for word in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def split_bundle(cert, key):
    """(key PEM, certificate PEM) of a pki_tool leaf."""
    bundle = pki_tool.pem_bundle(cert, key)  # certificate, then key
    marker = b"-----END CERTIFICATE-----\n"
    end = bundle.index(marker) + len(marker)
    return bundle[end:], bundle[:end]


def listener_bundles(count, common_name="localhost"):
    """count distinct valid uploads (key, then certificate) for common_name."""
    ca_cert, ca_key = pki_tool.make_ca("tenant CA")
    uploads = []
    for _ in range(count):
        key_pem, cert_pem = split_bundle(*pki_tool.make_leaf(
            ca_cert, ca_key, common_name, server=True, sans=[common_name, "127.0.0.1"]))
        uploads.append(key_pem + cert_pem)
    return uploads


def client_context(ca, cert=None):
    """TLS context for raw HTTP/1.1 to the API: the CA file, a client certificate."""
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert)
    context.set_alpn_protocols(["http/1.1"])
    return context


def tls_connection(api, context, timeout=10):
    raw = socket.create_connection(("127.0.0.1", api.port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def read_http_response(conn, deadline_seconds=10):
    """Read one HTTP/1.1 response (status, headers, body) honouring its Content-Length;
    status 0 if the server closed (or stayed silent) first. Raw bytes also returned."""
    data = b""
    end = time.monotonic() + deadline_seconds
    while b"\r\n\r\n" not in data and time.monotonic() < end:
        try:
            chunk = conn.recv(65536)
        except (socket.timeout, TimeoutError, ssl.SSLError, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    if b"\r\n\r\n" not in data:
        return 0, {}, b"", data
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length and time.monotonic() < end:
        try:
            chunk = conn.recv(65536)
        except (socket.timeout, TimeoutError, ssl.SSLError, ConnectionError):
            break
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length], data


def leftover_temporaries(instance_dir):
    """Temporary files (.<name>.<pid>.tmp) anywhere in an instance folder."""
    found = []
    for directory, _dirs, names in os.walk(instance_dir):
        found += [os.path.join(directory, n) for n in names
                  if n.startswith(".") and n.endswith(".tmp")]
    return found


def render(template, instance_dir, management_address="127.0.0.1"):
    """What the API makes of a haproxy template (Daemon.render)."""
    return template.replace("{MYIP}", management_address) \
                   .replace("{INSTANCE_DIR}", os.path.abspath(instance_dir))


def read_bytes(path):
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def haproxy_template(port, tag):
    """A valid template. All bind the same port, so any may replace any other; each
    is unique (its comment and the string it serves name the write that sent it)."""
    return ("# write %s, instance folder {INSTANCE_DIR}\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 2s\n"
            "    timeout client 5s\n"
            "    timeout server 5s\n"
            "frontend fe\n"
            "    bind {MYIP}:%d\n"
            "    http-request return status 200 content-type text/plain string %s\n"
            % (tag, port, tag))
