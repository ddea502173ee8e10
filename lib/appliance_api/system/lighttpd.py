"""lighttpd, the API's own server: a candidate certificate judged by
`lighttpd -tt`, the graceful restart that makes it read the new one, and a
look at what it serves.

lighttpd runs as root under systemd (`/usr/sbin/lighttpd -D`); SIGUSR1 is its
graceful restart: it reads its config and certificate again, and with
server.graceful-restart-bg (conf/lighttpd.conf) a forked copy finishes the
requests in flight, this one included, while the restarted server takes new
connections. Its pid stays the same.
"""
import os
import signal
import tempfile
import time

from . import MachineError, commands
from .processes import read_pid

# What a restart may take before the old certificate is put back.
RESTART_TIMEOUT = 10

# Enough of a config for `lighttpd -tt` to load the certificate the way the
# API's lighttpd does (mod_openssl, ssl.pemfile); -tt binds nothing.
_CHECK_CONFIG = """server.modules = ("mod_openssl")
server.document-root = "/"
server.port = 443
ssl.engine = "enable"
ssl.pemfile = "%s"
"""


def refuses_certificate(program, pem):
    """None when lighttpd loads pem (key + certificate + chain) as its
    ssl.pemfile; else lighttpd's own line saying why."""
    # Key material goes to memory-backed /dev/shm where there is one.
    folder = tempfile.mkdtemp(prefix=".appliance-api-", dir="/dev/shm" if os.path.isdir(
        "/dev/shm") else None)
    try:
        candidate = os.path.join(folder, "candidate.pem")
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        config = os.path.join(folder, "check.conf")
        with open(config, "w") as file:
            file.write(_CHECK_CONFIG % candidate)
        result = commands.run([program, "-tt", "-f", config], timeout=RESTART_TIMEOUT)
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    if result.returncode == 0:
        return None
    lines = [line.split(") ", 1)[-1] for line in result.output.replace(candidate, "the file")
             .splitlines() if line.strip() and "Going down" not in line]
    return lines[0] if lines else "%s -tt exited with %d" % (program, result.returncode)


def running_pid(pid_file):
    """lighttpd's pid from its pid file when that process is lighttpd, else None."""
    pid = read_pid(pid_file)
    if pid is None or pid <= 0:
        return None
    try:
        with open("/proc/%d/comm" % pid) as comm:
            return pid if comm.read().strip() == "lighttpd" else None
    except OSError:
        return None


def graceful_restart(pid):
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        raise MachineError("lighttpd (pid %d) is gone" % pid)


def wait_serving(address, port, certificate_der, timeout=RESTART_TIMEOUT):
    """Wait until a new TLS connection to address:port is shown certificate_der
    (the leaf, DER); True if it was within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served_certificate(address, port) == certificate_der:
            return True
        time.sleep(0.05)
    return False


def served_certificate(address, port, timeout=2):
    """The leaf certificate (DER) lighttpd shows a new connection, or None.
    No client certificate is sent: with TLS 1.3 the client has the server's
    certificate before the server asks for its own."""
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw) as tls:
                return tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
