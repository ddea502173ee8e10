"""Appliance: one keep-alive mutual-TLS connection to one appliance's API,
a method per endpoint, typed errors, bounded retries where a retry is safe."""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import random
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse

from .errors import ERRORS, ApiBusy, ApiError, ApiNotFound, ConnectionFailed


# Methods that may be sent again when an answer was lost: twice ends as once.
# A PUT stores the same bytes again (an identical certificate or 503 page
# answers 201 without a reload); a DELETE finds nothing the second time, so
# a DELETE whose first answer was lost can raise ApiNotFound for a delete that
# did happen.
IDEMPOTENT = frozenset(["GET", "HEAD", "PUT", "DELETE"])
# What put_certificate returns when the appliance already holds the same bytes.
UNCHANGED = ("OK", "unchanged")
# Each wait is stretched by up to this fraction, so controller threads that
# were refused together do not come back together.
JITTER = 0.25

INSTANCE_LINE = re.compile(r"(?P<id>\S+) +(?P<state>OK|DEGRADED|DOWN)")
SERVICE_LINE = re.compile(r"  (?P<name>\S+) +(?:running \(pid (?P<pid>\d+)\)|stopped)")



class _NotSent(Exception):
    """The connection could not be opened: the appliance saw nothing."""


class _NoAnswer(Exception):
    """The request may have been sent, and the connection broke before an answer."""


class _Hopeless(Exception):
    """No retry mends it: a TLS refusal, an appliance silent past the timeout."""




@dataclasses.dataclass(frozen=True)
class Answer:
    """A 2xx answer: status, headers (names in lower case), body bytes."""
    status: int
    headers: dict
    body: bytes

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    @property
    def lines(self):
        return self.text.splitlines()


@dataclasses.dataclass(frozen=True)
class ServiceState:
    running: bool
    pid: int | None = None


@dataclasses.dataclass(frozen=True)
class InstanceStatus:
    """One instance of /service_status: OK, DEGRADED or DOWN, and its services by name."""
    id: str
    state: str
    services: dict[str, ServiceState]


def parse_service_status(text):
    """/service_status's text as [InstanceStatus]. The layout is for people
    (an id padded to column 52 then the state; two spaces, a service name
    padded to 17, then `running (pid N)` or `stopped`): read it strictly, so
    a change of layout fails here instead of passing as "no services"."""
    instances = []
    for line in text.splitlines():
        service = SERVICE_LINE.fullmatch(line)
        instance = INSTANCE_LINE.fullmatch(line)
        if service and instances:
            pid = service.group("pid")
            instances[-1].services[service.group("name")] = ServiceState(
                pid is not None, int(pid) if pid else None)
        elif instance:
            instances.append(InstanceStatus(instance.group("id"), instance.group("state"), {}))
        elif line.strip():
            raise ValueError("unexpected line in /service_status: %r" % line)
    return instances


class Appliance:
    """One appliance's API over one keep-alive mutual-TLS connection.

    `ca` verifies the appliance (the controller CA); `cert` (and `key`, when
    it is not in the same file) is the controller's client certificate.
    `connect_timeout` bounds the connect and the TLS handshake, `timeout`
    each answer (a change may take the appliance's change wait, a daemon's
    start and a rollback: a minute is not too long). GET, HEAD, PUT and DELETE are
    retried on a connection that cannot be opened or breaks before its
    answer, and on 503 (after its Retry-After); POST only when the appliance
    certainly did nothing (503, or no connection). At most `retries` retries,
    waits of `backoff` seconds doubling each time, and no wait that would end
    past `max_wait` seconds from the first attempt. `on_retry(request,
    reason, delay)` is called before each wait (for the controller's log).

    Calls from several threads take turns on the one connection.
    """

    def __init__(self, address, port=443, *, ca, cert, key=None, timeout=60, connect_timeout=5,
                 retries=4, backoff=0.2, max_wait=30, on_retry=None):
        self.address = address.strip("[]")
        self.port = port
        self.name = ("[%s]:%d" if ":" in self.address else "%s:%d") % (self.address, port)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.on_retry = on_retry
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        # connect_timeout until connected, then timeout for each answer: a
        # change may take the appliance's change wait, a daemon's start
        # timeout and a rollback, and a read timeout is not retried.
        self._connection = http.client.HTTPSConnection(self.address, port,
                                                       timeout=connect_timeout, context=context)
        self._lock = threading.Lock()

    def __repr__(self):
        return "<Appliance %s>" % self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        with self._lock:
            self._connection.close()

    # --- reads -------------------------------------------------------------------

    def status(self):
        """/status as a dict."""
        return json.loads(self.request("GET", "/status").body)

    def service_status(self):
        """/service_status as [InstanceStatus]."""
        return parse_service_status(self.request("GET", "/service_status").text)

    def instances(self):
        """The instance ids, sorted."""
        return self.request("GET", "/instances").lines

    def instance_exists(self, instance):
        try:
            self.request("GET", _path("instances", instance))
        except ApiNotFound:
            return False
        return True

    def topology(self):
        return json.loads(self.request("GET", "/topology").body)

    def manifest(self):
        """Every stored file's SHA-256 by instance, and the topology (no secret)."""
        return json.loads(self.request("GET", "/manifest").body)

    def listeners(self):
        """[{"id", "status", "type", and "haproxy"/"stunnel": "running" or "stopped"}]."""
        return json.loads(self.request("GET", "/listeners").body)

    def listener(self, instance):
        return json.loads(self.request("GET", _path("listeners", instance)).body)

    def stats(self, instance):
        """One instance's haproxy: {"id", "haproxy", "frontends", "backends"},
        counters kept over its life on this node (docs/api.md)."""
        return json.loads(self.request("GET", _path("instances", instance, "stats")).body)

    def metrics(self):
        """/metrics: Prometheus' text format, as text."""
        return self.request("GET", "/metrics").text

    # --- instances, configs, 503 pages -----------------------------------------------

    def delete_instance(self, instance):
        """The answer's lines: OK, then one per daemon stopped."""
        return self.request("DELETE", _path("instances", instance)).lines

    def put_config(self, instance, service, template):
        """Store and run the haproxy or stunnel template (str or bytes); the answer's lines."""
        return self.request("PUT", _path("instances", instance, service),
                            _bytes(template)).lines

    def get_config(self, instance, service):
        """The template as uploaded."""
        return self.request("GET", _path("instances", instance, service)).text

    def delete_config(self, instance, service):
        return self.request("DELETE", _path("instances", instance, service)).lines

    def put_custom503(self, instance, page):
        """page: the whole HTTP response haproxy sends (str or bytes)."""
        return self.request("PUT", _path("instances", instance, "custom503"), _bytes(page)).lines

    def get_custom503(self, instance):
        return self.request("GET", _path("instances", instance, "custom503")).body

    def delete_custom503(self, instance):
        return self.request("DELETE", _path("instances", instance, "custom503")).lines

    # --- certificates ------------------------------------------------------------------

    def put_certificate(self, instance, filename, pem, force=False):
        """Upload key + certificate + chain as filename (the CN and `.pem`).

        Unless force, ask first (HEAD) whether the appliance already holds
        these bytes: its ETag is the stored file's SHA-256. If so nothing is
        sent and the result is list(UNCHANGED), ["OK", "unchanged"]; else the
        answer's lines ("OK", then a line per daemon reloaded). Saves the
        transfer and, more to the point, a pass through the appliance's
        certificate checks for each of a fleet's unchanged certificates.
        """
        pem = _bytes(pem)
        if not force and self.certificate_digest(instance, filename) == \
                hashlib.sha256(pem).hexdigest():
            return list(UNCHANGED)
        return self.request("PUT", _certificate_path(instance, filename), pem).lines

    def put_ca_file(self, instance, filename, pem, force=False):
        """Upload a CA file (CA certificates only) or a CRL (X509 CRL blocks
        only; its issuer must be in one of the instance's CA files) under any
        valid filename: the same URL and skip logic as put_certificate. A
        running haproxy takes it without a reload."""
        return self.put_certificate(instance, filename, pem, force=force)

    def put_api_certificate(self, pem):
        """Replace the appliance API's own certificate: key + certificate +
        chain, naming the appliance's management address or host name. The
        answer's lines once lighttpd serves it to new connections; ApiConflict
        (409) and the old one still served otherwise. Keep connections to
        this appliance open across it: they finish on the old certificate."""
        return self.request("PUT", "/certificate", _bytes(pem)).lines

    def certificate_digest(self, instance, filename):
        """The SHA-256 (hex) of the stored certificate file, from its ETag; None if absent."""
        try:
            answer = self.request("HEAD", _certificate_path(instance, filename))
        except ApiNotFound:
            return None
        etag = answer.headers.get("etag", "")
        return (etag[2:] if etag.startswith("W/") else etag).strip('"') or None

    def get_certificate(self, instance, filename):
        return self.request("GET", _certificate_path(instance, filename)).body

    def delete_certificate(self, instance, filename):
        """ApiConflict (409) while a stored config reads the certificate."""
        return self.request("DELETE", _certificate_path(instance, filename)).lines

    # --- crt-lists -----------------------------------------------------------------------

    def put_crt_list(self, instance, name, text):
        """Store a haproxy crt-list (str or bytes): each line
        `{INSTANCE_DIR}/certificates/<file>.pem [options] [SNI filters]`, every
        file a stored one of the instance. The answer's lines ("OK", then a
        reload line when a running haproxy reads it); ApiConflict (409) naming
        each refused line."""
        return self.request("PUT", _path("instances", instance, "crt-lists", name),
                            _bytes(text)).lines

    def get_crt_list(self, instance, name):
        """The crt-list as uploaded ({INSTANCE_DIR} as written)."""
        return self.request("GET", _path("instances", instance, "crt-lists", name)).text

    def delete_crt_list(self, instance, name):
        """ApiConflict (409) while a stored config reads the crt-list."""
        return self.request("DELETE", _path("instances", instance, "crt-lists", name)).lines

    # --- topology ------------------------------------------------------------------------

    def set_topology(self, topology, *, routing_mode=None, role=None, ha_ip=None,
                     primary_ip=None, all_ips=None, secret=None):
        """POST /topology: start a change to SINGLE or ACTIVE-STANDBY (watch
        topology()["topology_status"] for its outcome). Parameters left None
        are not sent, so the appliance's defaults apply; all_ips is a list."""
        fields = [("topology", topology)]
        for name, value in (("routing-mode", routing_mode), ("role", role), ("ha_ip", ha_ip),
                            ("primary_ip", primary_ip), ("secret", secret)):
            if value is not None:
                fields.append((name, value))
        fields += [("all_ips[%d]" % index, address)
                   for index, address in enumerate(all_ips or ())]
        body = urllib.parse.urlencode(fields).encode("ascii")
        return self.request("POST", "/topology", body,
                            {"Content-Type": "application/x-www-form-urlencoded"}).lines

    # --- the exchange ----------------------------------------------------------------

    def request(self, method, path, body=None, headers=None):
        """An Answer for a 2xx; ApiError (a subclass by status) for any other
        answer, ConnectionFailed for no answer, each after the retries
        allowed (see the class)."""
        request = "%s %s on %s" % (method, path, self.name)
        deadline = time.monotonic() + self.max_wait
        attempt = 0
        # Whether an attempt of this call lost its answer: this call's own, as
        # calls from other threads take turns on the connection meanwhile.
        call = _Call()
        while True:
            attempt += 1
            try:
                answer = self._attempt(method, path, body, headers or {}, call)
            except _NotSent as problem:
                failure = ConnectionFailed(str(problem), request, attempt)
                delay = None
            except _NoAnswer as problem:
                if method not in IDEMPOTENT:
                    raise ConnectionFailed("%s; not retried: the appliance may have acted on it"
                                           % problem, request, attempt) from None
                call.answer_lost = True
                failure = ConnectionFailed(str(problem), request, attempt)
                delay = None
            except _Hopeless as problem:
                raise ConnectionFailed(str(problem), request, attempt) from None
            else:
                if 200 <= answer.status < 300:
                    return answer
                if answer.status == 404 and method == "DELETE" and call.answer_lost:
                    # The attempt whose answer was lost did the delete.
                    return Answer(200, answer.headers, b"OK\nalready deleted: the answer to "
                                  b"an earlier attempt was lost\n")
                failure = _error(answer, request)
                if not isinstance(failure, ApiBusy):
                    raise failure
                delay = failure.retry_after
            if delay is None:
                delay = self.backoff * 2 ** (attempt - 1)
            delay *= 1 + random.uniform(0, JITTER)
            if attempt > self.retries or time.monotonic() + delay > deadline:
                raise failure
            if self.on_retry:
                reason = failure.reason if isinstance(failure, ConnectionFailed) else \
                    "%d %s" % (failure.status, failure.reason)
                self.on_retry(request, reason, delay)
            time.sleep(delay)

    def _attempt(self, method, path, body, headers, call):
        """One exchange: an Answer of any status, or _NotSent, _NoAnswer or _Hopeless.
        An answer lost on the way is marked in call (the request's _Call).

        lighttpd closes a connection idle for 5 s. One it already closed is
        seen before the request (it is readable) and replaced; one it closes
        while the request is on its way fails with no answer, and an
        idempotent request then goes again at once on a new connection."""
        with self._lock:
            connection = self._connection
            reused = connection.sock is not None
            # A POST is never sent on a kept-alive connection: one closed while
            # the request was on its way could not be told from a POST the
            # appliance received, and a POST is not retried then.
            if reused and (method not in IDEMPOTENT or _closed_by_peer(connection.sock)):
                connection.close()
                reused = False
            try:
                return self._exchange(method, path, body, headers, reused)
            except _NoAnswer:
                if not (reused and method in IDEMPOTENT):
                    raise
                call.answer_lost = True
            return self._exchange(method, path, body, headers, False)

    def _exchange(self, method, path, body, headers, reused):
        connection = self._connection
        if not reused:
            try:
                connection.connect()
                connection.sock.settimeout(self.timeout)
            except ssl.SSLCertVerificationError as error:
                connection.close()
                raise _Hopeless("the appliance's certificate: %s" % error.verify_message) from None
            except OSError as error:
                connection.close()
                raise _NotSent(_describe(error)) from None
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            data = response.read()
        except socket.timeout:
            connection.close()
            raise _Hopeless("no answer within %s s" % self.timeout) from None
        except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError,
                http.client.IncompleteRead) as error:
            connection.close()
            raise _NoAnswer(_describe(error)) from None
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise _Hopeless(_describe(error)) from None
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, headers, data)


class _Call:
    """One request() call's own state, across its attempts."""
    __slots__ = ("answer_lost",)

    def __init__(self):
        self.answer_lost = False


def _closed_by_peer(sock):
    """Whether a kept-alive connection has something to read between requests:
    the server's close (EOF, or TLS close_notify), never an answer."""
    poll = select.poll()  # not select(): a controller's descriptors pass 1024
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


def _error(answer, request):
    """The ApiError for a non-2xx answer. lighttpd's own answers (400, 411,
    501, ...) carry an HTML page, not the API's reason: the status's phrase then."""
    lines = answer.lines if answer.headers.get("content-type", "").startswith("text/plain") \
        else []
    reason = lines[0] if lines else http.client.responses.get(answer.status, "Error")
    detail = "\n".join(lines[1:])
    if answer.status == 503:
        return ApiBusy(answer.status, reason, detail, request,
                    _seconds(answer.headers.get("retry-after")))
    return ERRORS.get(answer.status, ApiError)(answer.status, reason, detail, request)


def _seconds(retry_after):
    try:
        return max(0.0, float(retry_after))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date (the API never sends one): back off instead


def _describe(error):
    return "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__


def _path(*segments):
    return "/" + "/".join(urllib.parse.quote(segment, safe="") for segment in segments)


def _certificate_path(instance, filename):
    return _path("instances", instance, "certificates", filename)


def _bytes(content):
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


# --- clusters ------------------------------------------------------------------------

