"""Plumbing for the end-to-end tests: the API behind a real lighttpd, reached with curl,
and small clients for what the daemons it starts serve. No mocks anywhere."""
import http.client
import os
import re
import socket
import subprocess
import sys
import time

import psutil

from support.polling import eventually  # noqa: F401  (re-exported for the suites)

CURL_TIMEOUT = 30
# What curl prints after the body: the status code, the Content-Type, the HTTP version.
WRITE_OUT = "\n%{http_code}\n%{content_type}\n%{http_version}"

# accesslog.format = "%h %V %u %t \"%r\" %>s %b %D" (conf/lighttpd.conf)
ACCESS_LINE = re.compile(
    r'^(?P<host>\S+) (?P<vhost>\S+) (?P<user>\S+) \[[^\]]+\] "(?P<request>[^"]*)" '
    r'(?P<status>\d+) (?P<bytes>\S+) (?P<micros>\d+)$')

_DEFAULT = object()
OCTCTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bin", "octctl")


class Reply:
    """What curl got: status (0 when there was no HTTP answer), body, Content-Type."""

    def __init__(self, completed):
        self.returncode = completed.returncode
        self.stderr = completed.stderr.decode("utf-8", "replace")
        body, code, content_type, http_version = completed.stdout.rsplit(b"\n", 3)
        self.status = int(code)
        self.body = body.decode("utf-8")
        self.content_type = content_type.decode("ascii")
        self.http_version = http_version.decode("ascii")

    @property
    def lines(self):
        return self.body.splitlines()

    def __repr__(self):
        return "<Reply %d %r rc=%d %r>" % (self.status, self.body[:500], self.returncode,
                                            self.stderr[-500:])


class Api:
    """The API served by a running lighttpd (see conftest.api)."""

    def __init__(self, folder, port, pki, process):
        self.folder = folder
        self.port = port
        self.process = process
        self.base = "https://127.0.0.1:%d" % port
        self.base6 = "https://[::1]:%d" % port
        self.ca = pki.ca
        self.client_cert = pki.client
        self.state_dir = os.path.join(folder, "state")
        self.instances_dir = os.path.join(self.state_dir, "instances")
        self.access_log = os.path.join(folder, "log", "access.log")
        self.error_log = os.path.join(folder, "log", "error.log")
        self.uploads = os.path.join(folder, "uploads")
        os.makedirs(self.uploads, exist_ok=True)
        self._upload_count = 0

    def url(self, path, ipv6=False):
        return (self.base6 if ipv6 else self.base) + path

    def run_curl(self, *args, cert=_DEFAULT, ca=_DEFAULT, write_out=WRITE_OUT):
        """curl with our CA (and by default our client certificate); the raw result."""
        argv = ["curl", "--noproxy", "*", "--globoff", "--max-time", str(CURL_TIMEOUT), "-s", "-S"]
        ca = self.ca if ca is _DEFAULT else ca
        cert = self.client_cert if cert is _DEFAULT else cert
        if ca:
            argv += ["--cacert", ca]
        if cert:
            argv += ["-E", cert]
        if write_out:
            argv += ["-w", write_out]
        return subprocess.run(argv + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=CURL_TIMEOUT + 5)

    def request(self, *args, **kwargs):
        """curl that must get an HTTP answer: a Reply."""
        reply = Reply(self.run_curl(*args, **kwargs))
        assert reply.returncode == 0, reply
        return reply

    def curl(self, *args):
        """(status, body) of curl --cacert ca.pem -E client.pem ARGS."""
        reply = self.request(*args)
        return reply.status, reply.body

    def get(self, path, *args, ipv6=False):
        return self.request(*args, self.url(path, ipv6))

    def delete(self, path, *args):
        return self.request("-X", "DELETE", *args, self.url(path))

    def upload_file(self, data):
        """data (str or bytes) in a file for curl -T."""
        self._upload_count += 1
        path = os.path.join(self.uploads, "upload-%d" % self._upload_count)
        with open(path, "wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def put(self, path, data, *args):
        """PUT data as the original's sample calls do: curl -X PUT -T FILE."""
        return self.request("-X", "PUT", "-T", self.upload_file(data), *args, self.url(path))

    def instances(self):
        reply = self.get("/instances")
        assert reply.status == 200, reply
        return reply.lines

    def service_status(self):
        reply = self.get("/service_status")
        assert reply.status == 200, reply
        return reply.body

    def service_pid(self, instance, service):
        """The pid /service_status reports for service of instance, or None."""
        lines = self.service_status().splitlines()
        header = lines.index(next(l for l in lines if l.startswith(instance)))
        for line in lines[header + 1:]:
            if not line.startswith("  "):
                break
            match = re.fullmatch(r"  %-17srunning \(pid (\d+)\)" % service, line)
            if match:
                return int(match.group(1))
        return None

    def read_access_log(self):
        try:
            with open(self.access_log, encoding="utf-8", errors="replace") as file:
                return file.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_access_log(self, needle, timeout=15):
        """lighttpd buffers its access log and flushes it every few seconds:
        wait until a line holds needle, then return every line."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.read_access_log()
            if any(needle in line for line in lines):
                return lines
            assert time.monotonic() < deadline, "%r never reached %s" % (needle, self.access_log)
            time.sleep(0.1)

    def error_log_size(self):
        try:
            return os.path.getsize(self.error_log)
        except FileNotFoundError:
            return 0

    def error_log_since(self, offset, wait_for="", timeout=3):
        """Text lighttpd's error log got after offset; waits (a little) for wait_for."""
        deadline = time.monotonic() + timeout
        while True:
            with open(self.error_log, "rb") as file:
                file.seek(offset)
                text = file.read().decode("utf-8", "replace")
            if wait_for in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def client(self, address="127.0.0.1", **settings):
        """An appliance_api.client.Appliance for this site, with our CA and client
        certificate; settings are Appliance's (timeout, retries, on_retry, ...)."""
        from appliance_api.client import Appliance

        return Appliance(address, self.port, ca=self.ca, cert=self.client_cert, **settings)


def octctl(api, *arguments, config=None):
    """octctl on the site's state folder, by its config file: the finished run."""
    return subprocess.run(
        [sys.executable, OCTCTL, "--config", config or os.path.join(api.folder, "appliance-api.ini"),
         *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def free_port_on_both():
    """A port free on 127.0.0.1 and on ::1 at once."""
    for _ in range(50):
        port = free_port("127.0.0.1")
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def listening_socket(host="127.0.0.1"):
    """A socket that holds a port (listening), as another program would."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((host, 0))
    holder.listen(8)
    return holder


def accepts(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(port, path="/", host="127.0.0.1", context=None, timeout=5):
    """(status, lower-cased headers, body) of one GET; one connection, closed after."""
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def pid_gone(pid):
    """Nothing runs under pid. A zombie counts as gone: PID 1 here does not reap."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def process_of(pid):
    """(name, cmdline) of a live pid."""
    process = psutil.Process(pid)
    assert process.status() != psutil.STATUS_ZOMBIE
    return process.name(), process.cmdline()


def live_children(pid):
    return [child.pid for child in psutil.Process(pid).children(recursive=True)
            if not pid_gone(child.pid)]


def daemons_under(folder):
    """Live haproxy/stunnel processes whose command line names folder."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if info["name"] in ("haproxy", "stunnel", "stunnel4") and \
                any(folder in word for word in (info["cmdline"] or [])):
            found.append(process)
    return found


def haproxy_template(port, backend_port, extra_frontend=""):
    return (
        "global\n"
        "    maxconn 100\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        "frontend fe\n"
        "    bind {MYIP}:%d\n"
        "%s"
        "    default_backend be\n"
        "backend be\n"
        "    server s1 127.0.0.1:%d\n" % (port, extra_frontend, backend_port))


def stunnel_template(port, haproxy_port, certificate="localhost.pem"):
    return ("[tls]\naccept = {MYIP}:%d\nconnect = {MYIP}:%d\n"
            "cert = {INSTANCE_DIR}/certificates/%s\n" % (port, haproxy_port, certificate))


class Supervisor:
    """`octctl supervise` on a site, as appliance-api-supervisor.service (or
    `make run`) runs it; its lines go to <folder>/log/supervisor.log."""

    def __init__(self, site, prefix=()):
        """site: an Api, or a support.netns.Site (prefix: its namespace's)."""
        self.log_path = os.path.join(site.folder, "log", "supervisor.log")
        self.log = open(self.log_path, "ab")
        self.log_offset = self.log.tell()  # the log is the site's: earlier supervisors' too
        self.process = subprocess.Popen(
            list(prefix) + [sys.executable, OCTCTL, "--config",
                            os.path.join(site.folder, "appliance-api.ini"), "supervise"],
            stdout=self.log, stderr=self.log, start_new_session=True)

    def lines(self):
        """What this supervisor logged."""
        with open(self.log_path, "rb") as file:
            file.seek(self.log_offset)
            return file.read().decode("utf-8", "replace").splitlines()

    def wait_ready(self, timeout=30):
        assert eventually(lambda: any("supervisor: ready" in line for line in self.lines()),
                          timeout), self.lines()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


def served_certificate(upload):
    """What GET of an uploaded key + certificate file answers a controller:
    the certificate and its chain, the key left out (the ETag stays the
    stored file's)."""
    return upload[upload.index(b"-----BEGIN CERTIFICATE-----"):]
