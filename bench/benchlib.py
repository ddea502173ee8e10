"""Shared pieces of the benchmarks: a throw-away PKI and site served by the real
lighttpd (through tools/devsite.py), a client that speaks to it with a client
certificate, free ports and percentiles. Standard library plus cryptography
(through tools/pki.py). Only ever talks to 127.0.0.1.
"""
import http.client
import math
import os
import socket
import ssl
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import devsite  # noqa: E402
import pki  # noqa: E402

ADDRESS = "127.0.0.1"


def free_port(address=ADDRESS):
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def make_pki(folder):
    """ca.pem, ca.key, server.pem (SAN 127.0.0.1) and client.pem in folder."""
    pki.generate(folder, server_addresses=[ADDRESS], force=True)
    return folder


def load_ca(pki_dir):
    """The test CA's certificate and key, to sign listener certificates with."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    with open(os.path.join(pki_dir, "ca.pem"), "rb") as file:
        cert = x509.load_pem_x509_certificate(file.read())
    with open(os.path.join(pki_dir, "ca.key"), "rb") as file:
        key = load_pem_private_key(file.read(), password=None)
    return cert, key


def client_context(pki_dir):
    context = ssl.create_default_context(cafile=os.path.join(pki_dir, "ca.pem"))
    context.load_cert_chain(os.path.join(pki_dir, "client.pem"))
    return context


class Site:
    """A site written by devsite.write_site() in folder, run by lighttpd.
    extra_conf is appended to the site's copy of lighttpd.conf before start."""

    def __init__(self, folder, pki_dir, extra_conf=""):
        self.folder = folder
        self.pki_dir = pki_dir
        self.port = free_port()
        self.conf = devsite.write_site(folder, [ADDRESS], self.port, pki_dir, sys.executable)
        if extra_conf:
            with open(self.conf, "a") as file:
                file.write("\n# Added by bench/\n" + extra_conf)
        self.api_config = os.path.join(folder, "appliance-api.ini")
        self.state_dir = os.path.join(folder, "state")
        self.instances_dir = os.path.join(self.state_dir, "instances")
        self.context = client_context(pki_dir)
        self.process = None

    def start(self):
        self.process = devsite.start_lighttpd(self.conf, ADDRESS, self.port)
        return self

    def stop(self):
        if self.process is not None:
            devsite.stop_lighttpd(self.process)
            self.process = None

    def connection(self, timeout=60):
        return http.client.HTTPSConnection(ADDRESS, self.port, context=self.context,
                                           timeout=timeout)

    def error_log_tail(self, lines=20):
        try:
            with open(os.path.join(self.folder, "log", "error.log"), errors="replace") as file:
                return "".join(file.readlines()[-lines:])
        except OSError:
            return ""


def timed_request(connection, method, path, body=None, headers=None):
    """(status, body bytes, seconds) for one request on connection, body read in full."""
    started = time.perf_counter()
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    return response.status, data, time.perf_counter() - started


def call(site, method, path, body=None, timeout=60):
    """One request on a fresh connection: (status, body text, seconds)."""
    connection = site.connection(timeout)
    try:
        status, data, seconds = timed_request(connection, method, path, body)
    finally:
        connection.close()
    return status, data.decode("utf-8", "replace"), seconds


def median(values):
    return statistics.median(values) if values else float("nan")


def p90(values):
    """Nearest-rank 90th percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def ms(seconds):
    return "%.1f" % (seconds * 1000.0) if seconds == seconds else "-"


def table(headers, rows):
    """Plain-text table, columns right-aligned except the first ones that are text."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_numberish(row[i]) for row in cells[1:]) for i in range(len(headers))]

    def line(row):
        return "  ".join(cell.rjust(w) if num else cell.ljust(w)
                         for cell, w, num in zip(row, widths, numeric)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def _numberish(text):
    try:
        float(text.rstrip("x%"))
        return True
    except ValueError:
        return text in ("-", "n/a")
