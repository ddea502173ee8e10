"""Hostile input, in process (issue 5, "Proof under fire").

Hypothesis throws random and hostile request lines and bodies at the WSGI
application, with the network step off:

- paths and methods, purely random or built around the real routes (mutated
  instance ids, file names with slashes or leading dots, percent-encoded dots
  and slashes, NUL, non-UTF-8 bytes, 10k-character segments), with small random
  PUT bodies and hostile Content-Length values. The answer is always one of the
  contract's codes (never 500, never a traceback), no file outside the state
  folder is created, removed or changed, and the state folder holds nothing but
  the layout's own files;
- bodies: mutated certificate bundles, mutated haproxy and stunnel configs
  (real haproxy -c, real daemons on 127.0.0.1 ports the test picks), mutated
  and random 503 pages, some against running daemons. The answer is 201, 409
  or 413 (413 exactly when the body is over the limit), a refused body changes
  nothing, and no daemon outlives the test.

Every example counts as an input in the figures table, every 500 as a server
error (asserted to stay at 0).
"""
import base64
import binascii
import hashlib
import io
import os
import re
import socket
import ssl
import subprocess
import uuid

import psutil
import pytest
import webtest
from hypothesis import given, note, settings, strategies as st

from appliance_api.app import make_application
from appliance_api.configscan import haproxy_words
from appliance_api.layout import (CERTIFICATE_NAME, COUNTERS_NAME, CRT_LIST_NAME, INSTANCE_ID,
                                  STOPPED_NAME, Instance)
from appliance_api.routes import ROUTES, compile_pattern, match
from appliance_api.system.daemons import daemon_for

from . import figures

# The environment lighttpd gives a request from a verified controller.
VERIFIED = {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN_CN": "controller", "HTTPS": "on"}

PATH_STATUSES = {200, 201, 403, 404, 409, 413}
BODY_STATUSES = {201, 409, 413}

SEED_ID = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"
CN = "www.example.test"
CERT_NAME = CN + ".pem"
CERT_LIMIT = 262144
CUSTOM503_LIMIT = 16384
CONFIG_LIMIT = 1048576

PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"

# Every name the layout puts in an instance folder (layout.py).
INSTANCE_FILES = {"lock", "haproxy.cfg", "haproxy.rendered.cfg", "haproxy.pid", "haproxy.log",
                  "stunnel.conf", "stunnel.rendered.conf", "stunnel.pid", "stunnel.log",
                  "custom503.http", "certificates", "master.sock", "haproxy.outcome",
                  "stunnel.outcome", "stunnel.listeners", "reload.pending", COUNTERS_NAME,
                  STOPPED_NAME, "crt-lists"}


# ---------------------------------------------------------------------------
# plumbing


def make_config(state_dir, **sections):
    """A Config for state_dir with the network step off (as tests/unit/conftest.py)."""
    from appliance_api import config

    merged = {"paths": {"state_dir": state_dir}, "network": {"manage": "no"},
              "status": {"network_interfaces": "all"}}
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    text = "".join("[%s]\n" % name + "".join("%s = %s\n" % item for item in values.items())
                   for name, values in merged.items())
    return config.parse(text, "<test>")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Answer:
    def __init__(self, status, headers, body, errors):
        self.status = status
        self.headers = headers
        self.body = body
        self.errors = errors

    def __repr__(self):
        return "<Answer %d %r errors=%r>" % (self.status, self.body[:300], self.errors[-300:])


def call(wsgi, method, path, body=b"", content_length=None):
    """One request straight into the WSGI callable, with PATH_INFO as given
    (webtest would refuse or re-encode many of the paths tried here)."""
    path, method, body = str(path), str(method), bytes(body)
    errors = io.StringIO()
    environ = dict(VERIFIED)
    environ.update({
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "appliance", "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1", "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
        "CONTENT_TYPE": "application/octet-stream",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "https", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": errors, "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": True,
    })
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = status, headers

    chunks = wsgi(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    status = started["status"]
    assert re.fullmatch(r"[0-9]{3} [^\r\n]+", status), status
    return Answer(int(status[:3]), dict(started["headers"]), data, errors.getvalue())


class Body(bytes):
    """A request body that prints short in Hypothesis' reports: a failing 300 KiB
    body is no help in a terminal."""

    def __repr__(self):
        if len(self) <= 400:
            return bytes.__repr__(self)
        return "<%d bytes: %r ... %r>" % (len(self), bytes(self[:200]), bytes(self[-200:]))

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))


class Path(str):
    """A request path that prints short in Hypothesis' reports."""

    def __repr__(self):
        if len(self) <= 300:
            return str.__repr__(self)
        return "<%d characters: %r ... %r>" % (len(self), str(self[:150]), str(self[-150:]))

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))


def _note(text):
    """hypothesis.note, also callable from a plain test."""
    from hypothesis.errors import InvalidArgument
    try:
        note(text)
    except InvalidArgument:
        pass


def count_status(status):
    figures.add("inputs")
    if status == 500:
        figures.add("server_errors")


def snapshot(root, skip):
    """(kind, size, mtime_ns, mode, sha256 or link target) of everything under root but skip."""
    found = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.join(folder, d) != skip)
        info = os.lstat(folder)
        found[folder] = ("dir", info.st_mtime_ns, info.st_mode)
        for name in names:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if os.path.islink(path):
                content = os.readlink(path)
            else:
                with open(path, "rb") as file:
                    content = hashlib.sha256(file.read()).hexdigest()
            found[path] = ("file", info.st_size, info.st_mtime_ns, info.st_mode, content)
    return found


def changed_paths(before, after):
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def layout_problems(state_dir, allow=()):
    """Anything in the state folder that the layout does not account for: stray or
    temporary files, an instance folder left with no uploaded file in it. allow:
    more names an instance folder may hold (files an uploaded config asked for)."""
    problems = []
    for name in os.listdir(state_dir):
        if name not in ("instances", "status-sample.json", "change-slots", "appliance.lock",
                        "topology.lock", "topology.json", "vrrp",
                        "owned-addresses.json"):
            problems.append(name)
    instances = os.path.join(state_dir, "instances")
    for name in os.listdir(instances) if os.path.isdir(instances) else []:
        folder = os.path.join(instances, name)
        if not re.fullmatch(INSTANCE_ID, name):
            problems.append(folder)
            continue
        if not Instance(state_dir, name).exists():
            problems.append(folder + " (no uploaded file)")
        for entry in os.listdir(folder):
            if entry not in INSTANCE_FILES and entry not in allow:
                problems.append(os.path.join(folder, entry))
        certificates = os.path.join(folder, "certificates")
        if os.path.isdir(certificates):
            problems.extend(os.path.join(certificates, entry) for entry in os.listdir(certificates)
                            if not re.fullmatch(CERTIFICATE_NAME, entry))
        crt_lists = os.path.join(folder, "crt-lists")
        if os.path.isdir(crt_lists):
            problems.extend(os.path.join(crt_lists, entry) for entry in os.listdir(crt_lists)
                            if not re.fullmatch(CRT_LIST_NAME, entry))
    return problems


def orphans(root):
    """Live processes (not zombies) whose command line names something under root."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(root in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except psutil.Error:
            pass
    return found


def reap_orphans(root):
    """Count and kill what orphans() finds; the count goes to the figures table."""
    found = orphans(root)
    described = []
    for process in found:
        try:
            described.append("%d %s" % (process.pid, " ".join(process.cmdline())))
            process.kill()
        except psutil.Error:
            pass
    figures.add("orphan_daemons", len(found))
    return described


def describe_daemon(daemon, pid):
    """What the pid file and the process table say, for a failure message."""
    try:
        with open(daemon.pid_file) as file:
            content = file.read()
    except OSError as error:
        content = repr(error)
    try:
        process = psutil.Process(pid)
        seen = "%s %s %r" % (process.status(), process.name(), process.cmdline())
    except psutil.Error as error:
        seen = repr(error)
    return "pid file %r; process %d: %s; now: %r" % (content, pid, seen, daemon.process())


class World:
    """A tmp root holding the state folder and, beside it, files that must never change."""

    def __init__(self, root, **sections):
        self.root = str(root)
        self.state_dir = os.path.join(self.root, "state")
        os.makedirs(self.state_dir)
        self.config = make_config(self.state_dir, **sections)
        self.wsgi = make_application(self.config)
        self.app = webtest.TestApp(self.wsgi, extra_environ=VERIFIED)
        outside = os.path.join(self.root, "outside")
        for relative, data in [
                ("outside/secret.pem", b"-----BEGIN PRIVATE KEY-----\nnot really\n"),
                ("outside/haproxy.cfg", b"global\n"),
                ("outside/custom503.http", PAGE),
                ("outside/lock", b""),
                ("outside/certificates/" + CERT_NAME, b"outside\n"),
                ("outside/instances/%s/custom503.http" % SEED_ID, PAGE),
                ("outside/instances/%s/certificates/%s" % (SEED_ID, CERT_NAME), b"x\n"),
                ("stray.txt", b"beside the state folder\n")]:
            path = os.path.join(self.root, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as file:
                file.write(data)
        os.symlink(outside, os.path.join(self.root, "outside", "loop"))
        self.outside = snapshot(self.root, self.state_dir)

    def instance(self, instance_id):
        return Instance(self.state_dir, instance_id)

    def outside_changes(self):
        return changed_paths(self.outside, snapshot(self.root, self.state_dir))

    def stop_configured_daemons(self):
        """DELETE, through the API, any config a request managed to store."""
        for instance in [self.instance(i) for i in _instance_folders(self.state_dir)]:
            for service in instance.configured_services():
                answer = call(self.wsgi, "DELETE", "/instances/%s/%s" % (instance.id, service))
                assert answer.status == 200, answer


def _instance_folders(state_dir):
    try:
        return sorted(os.listdir(os.path.join(state_dir, "instances")))
    except FileNotFoundError:
        return []


@pytest.fixture(scope="session")
def pki_material():
    """One valid key + certificate + chain bundle for CN, and blocks to mutate it with."""
    import datetime

    import pki
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import rsa

    def key_pem(key, fmt=s.PrivateFormat.PKCS8, encryption=s.NoEncryption()):
        return key.private_bytes(s.Encoding.PEM, fmt, encryption)

    def cert_pem(cert):
        return cert.public_bytes(s.Encoding.PEM)

    ca, ca_key = pki.make_ca("hostile input CA")
    leaf, key = pki.make_leaf(ca, ca_key, CN, server=True)
    other_leaf, other_key = pki.make_leaf(ca, ca_key, CN, server=True)
    wrong_leaf, _ = pki.make_leaf(ca, ca_key, "other.example.test", server=True)
    expired_leaf, _ = pki.make_leaf(ca, ca_key, CN, not_after=datetime.datetime(
        2001, 1, 1, tzinfo=datetime.timezone.utc))
    other_ca, _ = pki.make_ca("another CA")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret = s.BestAvailableEncryption(b"passphrase")
    blocks = [key_pem(key), cert_pem(leaf), cert_pem(ca)]
    alternates = [
        key_pem(other_key), cert_pem(other_leaf), cert_pem(wrong_leaf), cert_pem(expired_leaf),
        cert_pem(other_ca), key_pem(key, encryption=secret),
        key_pem(key, s.PrivateFormat.TraditionalOpenSSL),
        key_pem(rsa_key, s.PrivateFormat.TraditionalOpenSSL),
        key_pem(rsa_key, s.PrivateFormat.TraditionalOpenSSL, secret),
        key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo),
        b"-----BEGIN CERTIFICATE REQUEST-----\nMIIBADCBpwIBADA=\n"
        b"-----END CERTIFICATE REQUEST-----\n",
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ]
    return {"bundle": b"".join(blocks), "blocks": blocks, "alternates": alternates,
            "keys": [key_pem(key), key_pem(other_key), key_pem(rsa_key)], "leaf": leaf}


@pytest.fixture(scope="module")
def paths_world(tmp_path_factory, pki_material):
    world = World(tmp_path_factory.mktemp("hostile-paths"))
    yield world
    world.stop_configured_daemons()
    reap_orphans(world.root)


def daemon_world(tmp_path_factory, name):
    # Short daemon timeouts: a mutated config that hangs a daemon costs seconds, not tens.
    return World(tmp_path_factory.mktemp(name),
                 daemons={"start_timeout": "3", "stop_timeout": "2"})


# ---------------------------------------------------------------------------
# paths and methods


def latin1(data):
    """WSGI hands PATH_INFO over as the request's bytes decoded as latin-1."""
    return data.decode("latin-1")


def utf8_path(text):
    return latin1(text.encode("utf-8"))


METHODS = st.one_of(
    st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"]),
    st.sampled_from(["GET", "PUT", "DELETE"]),
    st.sampled_from(["get", "Put", "delete", "TRACE", "CONNECT", "PROPFIND", "MKCOL", "GET ",
                     " PUT", "", "G\x00ET", "PUT\r\n", "HEAD\n", "GET/1.1", "PUT PUT",
                     "\xff\xfe", "DELETE" * 50]),
    st.text(max_size=12).map(utf8_path),
)

HOSTILE_SEGMENTS = [
    "", ".", "..", "...", "%2e", "%2e%2e", "%2E%2E", ".%2e", "%2f", "%2F", "..%2f", "%2e%2e%2f",
    "..%5c", "%00", "\x00", "%252e%252e", "..;", "..\\..", "\\", "~", "*", "%", "%%", ";", "?",
    "#", "\n", "\r\n", " ", "\t", "\xe9", "\xc0\xae\xc0\xae", "\xef\xbc\x8e\xef\xbc\x8e",
    "instances", "certificates", "haproxy", "stunnel", "custom503", "status", "service_status",
    "state", "outside", "lock", "haproxy.cfg", "custom503.http", SEED_ID, SEED_ID.upper(),
    CERT_NAME, "..", "..",
]

SEGMENTS = st.one_of(
    st.sampled_from(HOSTILE_SEGMENTS),
    st.text(max_size=16).map(utf8_path),
    st.binary(max_size=12).map(latin1),
    st.tuples(st.sampled_from(["a", ".", "%2e", "/", "\xff", "0", "../", SEED_ID]),
              st.integers(5000, 12000)).map(lambda t: t[0] * (t[1] // len(t[0]))),
)

RANDOM_PATHS = st.one_of(
    st.text(max_size=80).map(utf8_path),
    st.binary(max_size=80).map(latin1),
    st.lists(SEGMENTS, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.lists(SEGMENTS, min_size=1, max_size=8).map("/".join),
).map(Path)


@st.composite
def instance_ids(draw):
    """Real ids (the seeded instance, fresh UUIDs) and near misses."""
    base = draw(st.one_of(st.just(SEED_ID), st.uuids().map(str)))
    kind = draw(st.sampled_from(["as is", "as is", "as is", "upper", "no hyphens", "drop",
                                 "add", "replace", "newline", "braces", "urn", "percent",
                                 "fullwidth", "dots", "int", "prefix slash", "truncate"]))
    position = draw(st.integers(0, len(base) - 1))
    char = draw(st.sampled_from("0af9gG-/.%\x00\n\xe9\uff10"))
    return {
        "as is": base,
        "upper": base.upper(),
        "no hyphens": base.replace("-", ""),
        "drop": base[:position] + base[position + 1:],
        "add": base[:position] + char + base[position:],
        "replace": base[:position] + char + base[position + 1:],
        "newline": base + "\n",
        "braces": "{%s}" % base,
        "urn": "urn:uuid:" + base,
        "percent": base.replace("-", "%2d"),
        "fullwidth": "".join(chr(0xff10 + int(c)) if c.isdigit() else c for c in base),
        "dots": base[:position] + "/../" + base[position:],
        "int": str(uuid.UUID(base).int),
        "prefix slash": "/" + base,
        "truncate": base[:position],
    }[kind].encode("utf-8").decode("latin-1")


CERTIFICATE_NAMES = st.one_of(
    st.sampled_from([CERT_NAME, "WILDCARD.example.test.pem", "a.pem", "x" * 251 + ".pem",
                     "x" * 252 + ".pem", "A-_.pem"]),
    st.sampled_from(["../x.pem", "..", ".", ".hidden.pem", ".pem", "a/b.pem", "/x.pem",
                     "..%2f..%2foutside%2fsecret.pem", "%2e%2e%2fsecret.pem",
                     "..%2F..%2F..%2Foutside%2Fcertificates%2F" + CERT_NAME, "x.pem\x00",
                     "x.pem\x00.pem", "x.pem\n", "x.PEM", "x.pem/", "x.pem.", "*.pem",
                     "x y.pem", "\xc3\xa9.pem", "../../outside/secret.pem",
                     "../../../outside/certificates/" + CERT_NAME, "../" + CERT_NAME,
                     "./" + CERT_NAME, CERT_NAME + "/..", ".%s.1.tmp" % CERT_NAME,
                     "lock", "x" * 10000 + ".pem", "%s" % ("../" * 40) + "etc/passwd"]),
    st.text(alphabet=st.sampled_from("ab.-_/%2e\x00\\"), max_size=24).map(lambda s: s + ".pem"),
    st.from_regex(CERTIFICATE_NAME, fullmatch=True),
)

SUFFIXES = st.one_of(
    st.just(""), st.just("/"),
    st.sampled_from(["/haproxy", "/stunnel", "/custom503"]),
    st.sampled_from(["/haproxy", "/stunnel", "/custom503"]),
    st.sampled_from(["/HAPROXY", "/haproxy/", "/haproxy/..", "/./haproxy", "/haproxy%00",
                     "/haproxy\x00", "/stunnel.conf", "/haproxy.cfg", "/custom503.http",
                     "/lock", "/haproxy.rendered.cfg", "/../%s/haproxy" % SEED_ID,
                     "/certificates", "/certificates/", "//haproxy", "/stunnel\n",
                     "/custom503/x", "/haproxy.pid", "/crt-lists", "/crt-lists/",
                     "/crt-lists/.x", "/crt-lists/a/b", "/crt-lists/..", "/CRT-LISTS/x"]),
    st.from_regex(CRT_LIST_NAME, fullmatch=True).map(lambda name: "/crt-lists/" + name),
    CERTIFICATE_NAMES.map(lambda name: "/certificates/" + name),
    CERTIFICATE_NAMES.map(lambda name: "/certificates/" + name),
    st.tuples(st.sampled_from(["/certificates//", "/certificates/./", "/certificates/../",
                               "/CERTIFICATES/", "/certificates%2f", "/certificates\\"]),
              CERTIFICATE_NAMES).map("".join),
)

PREFIXES = st.one_of(
    st.just("/instances/"),
    st.just("/instances/"),
    st.sampled_from(["/instances//", "//instances/", "/instances/./", "/INSTANCES/",
                     "/instances/../instances/", "instances/", "/api/instances/", "/instance/",
                     "/instances%2f", "/instances\\", "/%69nstances/", "/instances/%2e/", ""]),
)

STRUCTURED_PATHS = st.one_of(
    st.tuples(PREFIXES, instance_ids(), SUFFIXES).map("".join),
    st.sampled_from(["/status", "/service_status", "/instances", "/instances/", "/status/",
                     "/STATUS", "/status\n", "/status%00", "//status", "/./status",
                     "/instances/..", "/instances/../status", "/", ""]),
).map(Path)

CONTENT_LENGTHS = st.one_of(
    st.none(), st.none(), st.none(),
    st.sampled_from(["", "0", "-1", "-0", "abc", "1e3", " 5", "5 ", "0x10", "+3",
                     "99999999999999999999", str(CERT_LIMIT + 1), str(CONFIG_LIMIT + 1),
                     "\u0665", "3\x00"]),
)


def check_path_request(world, method, path, body, content_length):
    _note("request: %r %r (%d bytes of body, Content-Length %r)"
         % (method, path[:200], len(body), content_length))
    seed(world)
    answer = call(world.wsgi, method, path, body, content_length)
    count_status(answer.status)
    assert answer.status in PATH_STATUSES, answer
    assert b"Traceback" not in answer.body and "Traceback" not in answer.errors, answer
    if method != "HEAD":
        assert int(answer.headers["Content-Length"]) == len(answer.body)
    world.stop_configured_daemons()
    changed = world.outside_changes()
    figures.add("files_corrupted", len(changed))
    assert not changed, "changed outside the state folder: %r" % changed
    problems = layout_problems(world.state_dir)
    assert not problems, "stray files in the state folder: %r" % problems


def seed(world):
    """Keep an instance with a 503 page and a certificate, so requests on its id find files."""
    instance = world.instance(SEED_ID)
    if not os.path.exists(instance.custom503):
        assert call(world.wsgi, "PUT", "/instances/%s/custom503" % SEED_ID, PAGE).status == 201
    if not os.path.exists(instance.certificate(CERT_NAME)):
        answer = call(world.wsgi, "PUT", "/instances/%s/certificates/%s" % (SEED_ID, CERT_NAME),
                      world.bundle)
        assert answer.status == 201, answer


@pytest.fixture
def path_world(paths_world, pki_material):
    paths_world.bundle = pki_material["bundle"]
    yield paths_world
    assert reap_orphans(paths_world.root) == []


def test_random_paths_and_methods(path_world):
    @settings(max_examples=figures.scaled(3000, 15000))
    @given(method=METHODS, path=RANDOM_PATHS, body=st.binary(max_size=64),
           content_length=CONTENT_LENGTHS)
    def run(method, path, body, content_length):
        check_path_request(path_world, method, path, body, content_length)

    run()


def test_paths_around_the_real_routes(path_world):
    @settings(max_examples=figures.scaled(5500, 27500))
    @given(method=METHODS, path=STRUCTURED_PATHS, body=st.binary(max_size=64),
           content_length=CONTENT_LENGTHS)
    def run(method, path, body, content_length):
        check_path_request(path_world, method, path, body, content_length)

    run()


@settings(max_examples=figures.scaled(3000, 15000))
@given(path=st.one_of(STRUCTURED_PATHS, RANDOM_PATHS))
def test_the_router_matches_as_the_routes_regular_expressions(path):
    """The router matches rows without `re` (routes.match): on every path,
    every row's answer is the one its regular expression gives."""
    for _method, pattern, _handler in ROUTES:
        found = re.match(compile_pattern(pattern), path)
        assert match(pattern, path) == (found.groupdict() if found else None), pattern


def test_hostile_paths_never_reach_outside_files(path_world):
    """The traversal attempts that matter most, each tried explicitly with every method."""
    names = ["../x.pem", "..%2f..%2f..%2foutside%2fsecret.pem", "../../../outside/secret.pem",
             ".hidden.pem", "a/b.pem", "x.pem\x00", "\xff\xfe.pem"]
    paths = ["/instances/%s/certificates/%s" % (SEED_ID, name) for name in names] + [
        "/instances/../outside/custom503.http", "/instances/%s/../../outside/haproxy.cfg" % SEED_ID,
        "/instances/%s/custom503/../../../../outside/custom503.http" % SEED_ID,
        "/instances/%2e%2e/outside", "/" + "a" * 10000, "/instances/" + "\xff" * 10000]
    for path in paths:
        for method in ("GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"):
            check_path_request(path_world, method, path, b"x", None)
            answer = call(path_world.wsgi, method, path, b"x")
            assert answer.status == 403, (method, path, answer)


# ---------------------------------------------------------------------------
# certificate bundles


def _drop(blocks, i, j):
    return blocks[:i] + blocks[i + 1:]


def _duplicate(blocks, i, j):
    return blocks[:j] + [blocks[i]] + blocks[j:]


def _swap(blocks, i, j):
    blocks = list(blocks)
    if blocks:
        blocks[i], blocks[j] = blocks[j], blocks[i]
    return blocks


BLOCK_OPS = {"drop": _drop, "duplicate": _duplicate, "swap": _swap}


def _corrupt_der(block, position, value):
    """The PEM block with one byte of its DER replaced: still well-formed base64,
    so the parsers, not the PEM reader, meet the damage."""
    lines = block.strip().split(b"\n")
    try:
        der = bytearray(base64.b64decode(b"".join(lines[1:-1]), validate=True))
    except (ValueError, binascii.Error):
        return block
    if not der:
        return block
    der[position % len(der)] = value
    encoded = base64.b64encode(bytes(der))
    body = b"\n".join(encoded[k:k + 64] for k in range(0, len(encoded), 64))
    return lines[0] + b"\n" + body + b"\n" + lines[-1] + b"\n"


@st.composite
def certificate_bodies(draw, material):
    blocks = list(material["blocks"])
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "replace", "replace", "der",
                                   "der"]))
        i = draw(st.integers(0, 9)) % max(len(blocks), 1)
        j = draw(st.integers(0, 9)) % max(len(blocks), 1)
        if op == "replace":
            if blocks:
                blocks[i] = draw(st.sampled_from(material["alternates"]))
        elif op == "der":
            if blocks:
                blocks[i] = _corrupt_der(blocks[i], draw(st.integers(0, 2000)),
                                         draw(st.integers(0, 255)))
        else:
            blocks = BLOCK_OPS[op](blocks, i, j)
    data = b"".join(blocks)
    for _ in range(draw(st.integers(0, 3))):  # text-level edits
        op = draw(st.sampled_from(["truncate", "corrupt", "corrupt", "insert", "crlf", "bom",
                                   "whitespace", "header", "label", "lowercase"]))
        at = draw(st.integers(0, max(len(data), 1))) % (len(data) + 1)
        if op == "truncate":
            data = data[:at]
        elif op == "corrupt" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + draw(st.sampled_from(
                [b"A", b"/", b"+", b"=", b"-", b"*", b" ", b"\n", b"\x00", b"\xff", b"\xc3\xa9"]
            )) + data[at + 1:]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif op == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op == "whitespace":
            space = draw(st.sampled_from([b"\n", b"\n\n", b" ", b"\t", b"\r"]))
            data = data[:at] + space + data[at:]
        elif op == "header":
            data = data.replace(b"KEY-----\n", b"KEY-----\nProc-Type: 4,ENCRYPTED\n"
                                b"DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n", 1)
        elif op == "label":
            data = data.replace(b"-----END CERTIFICATE-----", b"-----END CERTIFICATE----", 1)
        elif op == "lowercase":
            data = data.lower()
    if draw(st.integers(0, 19)) == 0:
        filler = draw(st.sampled_from([b"\n", b" ", b"A", b"#"]))
        size = draw(st.integers(CERT_LIMIT - len(data) - 2, CERT_LIMIT - len(data) + 2000))
        where = draw(st.sampled_from(["before", "after"]))
        padding = filler * max(size, 0)
        data = padding + data if where == "before" else data + padding
    return Body(data)


def certificate_leaf_der(data):
    """The DER of the first CERTIFICATE block of a stored bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    start = data.index(b"-----BEGIN CERTIFICATE-----")
    return x509.load_pem_x509_certificate(data[start:]).public_bytes(serialization.Encoding.DER)


def check_certificate_put(world, instance_id, body, stored_before, material):
    url = "/instances/%s/certificates/%s" % (instance_id, CERT_NAME)
    note("body (%d bytes): %r" % (len(body), body[:400]))
    response = world.app.put(url, body, expect_errors=True)
    count_status(response.status_int)
    assert response.status_int in BODY_STATUSES, response
    assert b"Traceback" not in response.body and "Traceback" not in response.errors
    assert (response.status_int == 413) == (len(body) > CERT_LIMIT), response
    # A refusal never echoes key material.
    assert b"PRIVATE KEY" not in response.body and "PRIVATE KEY" not in response.errors
    for key in material["keys"]:
        for line in key.splitlines()[1:-1]:
            assert line not in response.body, response
    path = world.instance(instance_id).certificate(CERT_NAME)
    with open(path, "rb") as file:
        stored = file.read()
    expected = body if response.status_int == 201 else stored_before
    if stored != expected:
        figures.add("files_corrupted")
    assert stored == expected
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert not layout_problems(world.state_dir)
    return response, stored


@pytest.fixture(scope="module")
def certificates_world(tmp_path_factory):
    world = daemon_world(tmp_path_factory, "hostile-certificates")
    yield world
    world.stop_configured_daemons()
    reap_orphans(world.root)


def test_mutated_certificate_bundles(certificates_world, pki_material):
    world = certificates_world
    instance_id = str(uuid.uuid4())
    url = "/instances/%s/certificates/%s" % (instance_id, CERT_NAME)
    assert world.app.put(url, pki_material["bundle"]).status_int == 201
    stored = {"data": pki_material["bundle"]}

    @settings(max_examples=figures.scaled(1000, 5000))
    @given(body=certificate_bodies(pki_material))
    def run(body):
        _, stored["data"] = check_certificate_put(world, instance_id, body, stored["data"],
                                                  pki_material)

    try:
        run()
    finally:
        world.app.delete("/instances/" + instance_id)
    assert reap_orphans(world.root) == []


def test_certificates_with_malformed_names(certificates_world, pki_material):
    """cryptography parses a certificate's names only when they are read: a name
    that is not valid DER must be refused as data (409), not crash a check (500)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    world = certificates_world
    key, leaf, ca = pki_material["blocks"]
    der = pki_material["leaf"].public_bytes(serialization.Encoding.DER)
    issuer_at = der.index(b"hostile input CA")
    subject_at = der.index(CN.encode())
    url = "/instances/%s/certificates/%s" % (uuid.uuid4(), CERT_NAME)
    for at, chain in ((issuer_at, ca), (issuer_at, b""), (subject_at, ca), (subject_at, b"")):
        broken = der[:at] + b"\xff" + der[at + 1:]
        encoded = base64.b64encode(broken)
        block = (b"-----BEGIN CERTIFICATE-----\n"
                 + b"\n".join(encoded[k:k + 64] for k in range(0, len(encoded), 64))
                 + b"\n-----END CERTIFICATE-----\n")
        x509.load_pem_x509_certificate(block)  # loads: the damage shows later
        response = world.app.put(url, key + block + chain, expect_errors=True)
        count_status(response.status_int)
        assert response.status_int == 409, response
        assert response.text == "File contains data that is not a PEM key or certificate\n"
    assert reap_orphans(world.root) == []


STUNNEL_TEMPLATE = [
    "; stunnel for the hostile-input tests",
    "[tls]",
    "accept = {MYIP}:@PORT@",
    "connect = 127.0.0.1:@PORT2@",
    "cert = {INSTANCE_DIR}/certificates/%s" % CERT_NAME,
]


def start_stunnel(world, instance_id):
    template = "\n".join(STUNNEL_TEMPLATE).replace("@PORT@", str(free_port())).replace(
        "@PORT2@", str(free_port())) + "\n"
    response = world.app.put("/instances/%s/stunnel" % instance_id, template.encode())
    assert response.status_int == 201, response
    accept = re.search(r"accept = \{MYIP\}:(\d+)", template).group(1)
    return int(accept)


def served_certificate(port):
    """The DER certificate a TLS listener on 127.0.0.1:port presents."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=CN) as tls:
            return tls.getpeercert(binary_form=True)


def test_mutated_certificate_bundles_under_a_running_stunnel(certificates_world, pki_material):
    """A certificate in use is reloaded into stunnel; a refused one changes nothing, and
    stunnel keeps serving whatever the stored file holds."""
    world = certificates_world
    instance_id = str(uuid.uuid4())
    base = "/instances/" + instance_id
    assert world.app.put(base + "/certificates/" + CERT_NAME,
                         pki_material["bundle"]).status_int == 201
    port = start_stunnel(world, instance_id)
    stunnel = daemon_for("stunnel", world.instance(instance_id), world.config)
    pid = stunnel.process().pid
    stored = {"data": pki_material["bundle"]}

    @settings(max_examples=figures.scaled(30, 150))
    @given(body=certificate_bodies(pki_material))
    def run(body):
        _, stored["data"] = check_certificate_put(world, instance_id, body, stored["data"],
                                                  pki_material)
        process = stunnel.process()
        assert process is not None and process.pid == pid, \
            "stunnel was restarted or stopped: %s" % describe_daemon(stunnel, pid)
        assert served_certificate(port) == certificate_leaf_der(stored["data"])

    try:
        run()
    finally:
        world.app.delete(base)
    assert reap_orphans(world.root) == []


# ---------------------------------------------------------------------------
# haproxy and stunnel configs


HAPROXY_TEMPLATE = [
    "global",
    "    maxconn 64",
    "defaults",
    "    mode http",
    "    timeout connect 1s",
    "    timeout client 5s",
    "    timeout server 5s",
    "frontend web",
    "    bind {MYIP}:@PORT@",
    "    errorfile 503 {INSTANCE_DIR}/custom503.http",
    "    default_backend app",
    "backend app",
    "    server s1 127.0.0.1:@PORT2@",
]

HAPROXY_JUNK = [
    "", "#", "    # a comment", "\t", "global", "defaults", "frontend web", "backend app",
    "listen other", "    bind 127.0.0.1:@PORT3@", "    bind 127.0.0.1:@BUSY@",
    "    bind {MYIP}:@PORT@", "    bind \"${NO_SUCH_VARIABLE}\"", "    bind 127.0.0.1:0",
    "    daemon", "    quiet", "    nbthread 2", "    maxconn 0", "    maxconn -1",
    "    maxconn 99999999999999", "    chroot /nonexistent", "    user nobody",
    "    stats socket {INSTANCE_DIR}/stats.sock mode 600", "    pidfile {INSTANCE_DIR}/other.pid",
    "    log stdout format raw local0", "    mode tcp", "    mode nonsense",
    "    errorfile 503 {INSTANCE_DIR}/missing.http",
    "    errorfile 404 {INSTANCE_DIR}/custom503.http",
    "    default_backend nowhere", "    use_backend %[req.hdr(host)]",
    "    server s2 127.0.0.1:@PORT2@ check inter 50ms", "    timeout client 0",
    "    hard-stop-after 1s", "    nbproc 2", "    lua-load {INSTANCE_DIR}/missing.lua",
    "    http-request deny", "    http-request return status 200 content-type text/plain string ok",
    "    acl a path_beg /",
    "    bind {MYIP}:@PORT@ ssl crt {INSTANCE_DIR}/certificates/%s" % CERT_NAME,
    "    bind {MYIP}:@PORT3@ ssl crt {INSTANCE_DIR}/certificates/missing.pem",
    "    option httplog", "{MYIP}", "{INSTANCE_DIR}", "{", "}", "'", "\"", "\\", "x" * 3000,
    # haproxy's quoting, escapes and expansion (issue 18): each names something refused.
    '    "${X-lua-load}" {INSTANCE_DIR}/.haproxy.candidate.tmp', "    \\x6cua-load /x.lua",
    '    "${X-program}" p', '    "${X-command}" /bin/sh -c "exit 0"', "    crt-base ..",
    '    crt-base "${X-..}"', "    crt-base \\x2e\\x2e", "    .if 1", "    .endif",
    "    bind unix@{INSTANCE_DIR}/custom503.http", "    errorfile 503 /etc/passwd",
    "    http-request return status 200 lf-file /etc/passwd",
    "    acl x src -f /etc/passwd", "    server-state-file /etc/shadow",
    "    bind {MYIP}:@PORT3@ ssl crt ../%s/certificates/%s" % (SEED_ID, CERT_NAME),
    "    server s3 unix@/run/systemd/private", "    l'ua'-load /x.lua", '    "$HOME"',
]

STUNNEL_JUNK = [
    "", ";", "# comment", "\t", "[tls]", "[second]", "[]", "[", "]", "=", "key=value=other",
    "foreground = yes", "foreground = quiet", "pid = {INSTANCE_DIR}/other.pid", "pid =",
    "output = {INSTANCE_DIR}/other.log", "setuid = nobody", "setgid = nogroup",
    "chroot = /nonexistent", "client = yes", "debug = 7", "debug = 99", "syslog = yes",
    "key = {INSTANCE_DIR}/certificates/missing.pem", "cert = /nonexistent.pem",
    "CAfile = {INSTANCE_DIR}/certificates/%s" % CERT_NAME, "verify = 2",
    "accept = {MYIP}:@BUSY@", "accept = {MYIP}:@PORT3@", "accept = {MYIP}:@PORT@",
    "connect = 127.0.0.1:@PORT@", "sslVersion = TLSv9", "ciphers = NONE", "TIMEOUTclose = 0",
    "socket = l:TCP_NODELAY=1", "delay = yes", "retry = yes", "fips = yes", "compression = zlib",
    "redirect = 127.0.0.1:1", "sni = x:y", "include = {INSTANCE_DIR}/certificates",
    "{MYIP}", "{INSTANCE_DIR}", "x" * 3000,
]

CONFIG_NAMED_FILES = {"stats.sock", "other.pid", "other.log"}

EDIT_CHARACTERS = st.sampled_from(list("{}[]#;=:/\\\"' \t\r\n\x00%$@0123456789")
                                  + ["\xe9", "\udcff"])


@st.composite
def mutated_configs(draw, template, junk, limit):
    """A config template after random line drops, duplications, swaps, junk lines,
    character edits and truncations; ports are @PORT@ placeholders until sent."""
    lines = list(template)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "junk", "junk", "random",
                                   "edit", "edit", "truncate"]))
        i = draw(st.integers(0, 99)) % (len(lines) + 1)
        j = draw(st.integers(0, 99)) % max(len(lines), 1)
        if op == "drop" and lines:
            del lines[i % len(lines)]
        elif op == "duplicate" and lines:
            lines.insert(i, lines[j])
        elif op == "swap" and lines:
            i %= len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "junk":
            lines.insert(i, draw(st.sampled_from(junk)))
        elif op == "random":
            lines.insert(i, draw(st.text(max_size=40)))
        elif op in ("edit", "truncate") and lines:
            text = "\n".join(lines)
            at = draw(st.integers(0, len(text)))
            if op == "truncate":
                text = text[:at]
            else:
                kind = draw(st.sampled_from(["insert", "replace", "delete"]))
                char = draw(EDIT_CHARACTERS)
                if kind == "insert":
                    text = text[:at] + char + text[at:]
                elif kind == "replace":
                    text = text[:at] + char + text[at + 1:]
                else:
                    text = text[:at] + text[at + 1:]
            lines = text.split("\n")
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))
    data = text.encode("utf-8", "surrogateescape")
    if draw(st.integers(0, 49)) == 0:
        data += b"#" * draw(st.integers(limit - len(data) - 2, limit - len(data) + 100))
    return Body(data)


def fill_ports(data, busy_port):
    ports = {b"@PORT@": free_port(), b"@PORT2@": free_port(), b"@PORT3@": free_port(),
             b"@BUSY@": busy_port}
    for placeholder, port in ports.items():
        data = data.replace(placeholder, str(port).encode())
    return data


@pytest.fixture(scope="module")
def configs_world(tmp_path_factory, pki_material):
    world = daemon_world(tmp_path_factory, "hostile-configs")
    # A port some test always holds, for configs that bind it.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    world.busy_port = busy.getsockname()[1]
    yield world
    busy.close()
    world.stop_configured_daemons()
    reap_orphans(world.root)


def check_config_put(world, instance_id, service, data, limit):
    instance = world.instance(instance_id)
    url = "/instances/%s/%s" % (instance_id, service)
    note("%s config (%d bytes): %r" % (service, len(data), data[:2000]))
    response = world.app.put(url, data, expect_errors=True)
    count_status(response.status_int)
    note("answer: %d %r" % (response.status_int, response.text[:2000]))
    assert response.status_int in BODY_STATUSES, response
    assert b"Traceback" not in response.body and "Traceback" not in response.errors
    assert (response.status_int == 413) == (len(data) > limit), response
    daemon = daemon_for(service, instance, world.config)
    if response.status_int == 201:
        assert world.app.get(url).body == data
        assert daemon.process() is not None, "201 but no %s running" % service
        deleted = world.app.delete(url, expect_errors=True)
        assert deleted.status_int == 200, deleted
    else:
        # A refused config changes nothing: none was stored, none runs.
        assert world.app.get(url, expect_errors=True).status_int == 404
        assert daemon.process() is None
        for path in (instance.template(service), instance.rendered(service)):
            assert not os.path.exists(path), path
    leaked = reap_orphans(world.root)
    assert leaked == [], "daemons left running: %r" % leaked
    # Files the junk lines name (a stats socket, pid files, a log) may stay; nothing else.
    assert not layout_problems(world.state_dir, CONFIG_NAMED_FILES)


def test_mutated_haproxy_configs(configs_world):
    world = configs_world
    instance_id = str(uuid.uuid4())
    assert world.app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201

    @settings(max_examples=figures.scaled(150, 750))
    @given(template=mutated_configs(HAPROXY_TEMPLATE, HAPROXY_JUNK, CONFIG_LIMIT))
    def run(template):
        check_config_put(world, instance_id, "haproxy", fill_ports(template, world.busy_port),
                         CONFIG_LIMIT)

    try:
        run()
    finally:
        world.stop_configured_daemons()
        world.app.delete("/instances/" + instance_id, expect_errors=True)
    assert reap_orphans(world.root) == []


# haproxy's own reading of a line is the oracle: an unknown keyword's alert
# names the word as haproxy decoded it.
KEYWORD_ALERT = re.compile(r"parsing \[[^:\]]+:(\d+)\] : unknown keyword '(.*)' in 'global' section")
# Weighted towards what haproxy's escapes are made of.
SPELLING_ALPHABET = st.sampled_from(list("\\\\tnrxa$#'\" \t{}")) | st.characters(
    min_codepoint=32, max_codepoint=126)


@st.composite
def haproxy_spelling(draw, word, expansions=False):
    r"""word (printable ASCII and tabs, no NUL) written in one of the ways
    haproxy 2.6 reads back as word: plain runs, \xHH escapes, double and
    single quotes, backslash escapes, empty quotes; with expansions, also
    "${UNSET-...}" defaults, which haproxy expands to the same word."""
    spelt, index = [], 0
    while index < len(word):
        size = draw(st.integers(1, 4))
        chunk, index = word[index:index + size], index + size
        forms = ["plain", "hex", "double", "single", "backslash", "empty"]
        form = draw(st.sampled_from(forms + (["default"] if expansions else [])))
        if form == "plain" and not set(chunk) & set(" \t#'\"") and all(
                chunk[at + 1:at + 2] not in ("", " ", "\\", "#", "'", '"', "t", "n", "r", "x")
                for at, c in enumerate(chunk) if c == "\\"):
            spelt.append(chunk)  # a backslash before anything else stays one
        elif form == "double":
            spelt.append('"%s"' % "".join("\\" + c if c in '"\\$' else c for c in chunk))
        elif form == "single" and "'" not in chunk:
            spelt.append("'%s'" % chunk)
        elif form == "backslash":
            spelt.append("".join("\\" + c if c in " #'\"\\" else
                                 "\\x%02x" % ord(c) if c == "\t" else c for c in chunk))
        elif form == "empty":
            spelt.append(draw(st.sampled_from(['""', "''"])) + "".join(
                "\\x%02x" % ord(c) for c in chunk))
        elif form == "default" and not set(chunk) & set('}"\\$'):
            spelt.append('"${APPLIANCE_UNSET_%d-%s}"' % (draw(st.integers(0, 9)), chunk))
        else:
            spelt.append("".join("\\x%02x" % ord(c) for c in chunk))
    return "".join(spelt)


def test_the_scan_reads_haproxys_quoting_and_escapes_as_haproxy_does(tmp_path):
    """Random words, spelt in random mixes of haproxy's quoting and escape
    forms: the scan's word is haproxy's own (real haproxy -c says which) and
    the word meant. Forms with expansion are refused by the scan, and haproxy
    reads them as the same word: the refusal is not a gap in what it reads."""
    config = str(tmp_path / "spellings.cfg")

    @settings(max_examples=figures.scaled(25, 150), deadline=None)
    @given(data=st.data(), expansions=st.booleans(),
           words=st.lists(st.text(SPELLING_ALPHABET, min_size=1, max_size=10)
                          .map(lambda text: "zz" + text), min_size=1, max_size=40))
    def run(data, expansions, words):
        lines = ["    " + data.draw(haproxy_spelling(word, expansions)) for word in words]
        with open(config, "w") as file:
            file.write("global\n" + "".join(line + "\n" for line in lines))
        result = subprocess.run(["haproxy", "-c", "-f", config], capture_output=True,
                                env={"PATH": "/usr/sbin:/usr/bin"})
        read_by_haproxy = {int(number): word for number, word in
                           KEYWORD_ALERT.findall(result.stderr.decode("utf-8", "replace"))}
        for number, (word, line) in enumerate(zip(words, lines), 2):
            note("%r spelt %r" % (word, line))
            figures.add("spellings")
            assert read_by_haproxy.get(number) == word, result.stderr.decode()[-2000:]
            try:
                scanned = haproxy_words(line)[0][0]
            except ValueError as refused:
                assert "$" in line and "environment variables" in str(refused)
                continue
            assert scanned == word

    run()


DANGEROUS_LINES = [
    ("global", ["lua-load", "@MARKER@.lua"]),
    ("global", ["program", "p"]),
    ("global", ["crt-base", ".."]),
    ("global", ["server-state-file", "/etc/shadow"]),
    ("global", ["setenv", "X", "1"]),
    ("global", [".if", "1"]),
    ("frontend web", ["errorfile", "503", "/etc/passwd"]),
    ("frontend web", ["http-request", "return", "status", "200", "lf-file", "/etc/passwd"]),
    ("frontend web", ["acl", "a", "src", "-f", "/etc/passwd"]),
    ("frontend web", ["bind", "unix@{INSTANCE_DIR}/custom503.http"]),
    ("frontend web", ["bind", "{MYIP}:@PORT3@", "ssl", "crt",
                      "{INSTANCE_DIR}/../%s/certificates/%s" % (SEED_ID, CERT_NAME)]),
    ("backend app", ["server", "s9", "unix@/run/systemd/private"]),
]


def test_refused_lines_are_refused_however_haproxy_would_spell_them(configs_world, tmp_path):
    """A line the rules refuse, its words spelt in haproxy's forms (with and
    without expansion) inside a valid config: always 409, nothing stored,
    nothing started, and code it would run never runs."""
    world = configs_world
    instance_id = str(uuid.uuid4())
    assert world.app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    marker = str(tmp_path / "ran")
    with open(marker + ".lua", "w") as file:
        file.write('os.execute("touch %s")\n' % marker)

    @settings(max_examples=figures.scaled(40, 300))
    @given(data=st.data(), dangerous=st.sampled_from(DANGEROUS_LINES))
    def run(data, dangerous):
        section, words = dangerous
        line = "    " + " ".join(data.draw(haproxy_spelling(w.replace("@MARKER@", marker),
                                                          data.draw(st.booleans())))
                                 for w in words)
        lines = list(HAPROXY_TEMPLATE)
        lines.insert(lines.index(section) + 1, line)
        if words[0] == "program":
            lines.insert(lines.index(section) + 2, '    command /bin/sh -c "touch %s"' % marker)
        body = fill_ports(("\n".join(lines) + "\n").encode(), world.busy_port)
        note(body.decode())
        response = world.app.put("/instances/%s/haproxy" % instance_id, body, expect_errors=True)
        count_status(response.status_int)
        assert response.status_int == 409, response.text
        assert response.text.startswith("Invalid configuration\nline "), response.text
        assert not os.path.exists(marker), "code from a tenant's config ran"
        assert world.app.get("/instances/%s/haproxy" % instance_id,
                             expect_errors=True).status_int == 404
        assert reap_orphans(world.root) == []

    try:
        run()
    finally:
        world.app.delete("/instances/" + instance_id, expect_errors=True)


def test_mutated_stunnel_configs(configs_world, pki_material):
    world = configs_world
    instance_id = str(uuid.uuid4())
    url = "/instances/%s/certificates/%s" % (instance_id, CERT_NAME)
    assert world.app.put(url, pki_material["bundle"]).status_int == 201

    @settings(max_examples=figures.scaled(150, 750))
    @given(template=mutated_configs(STUNNEL_TEMPLATE, STUNNEL_JUNK, CONFIG_LIMIT))
    def run(template):
        check_config_put(world, instance_id, "stunnel", fill_ports(template, world.busy_port),
                         CONFIG_LIMIT)

    try:
        run()
    finally:
        world.stop_configured_daemons()
        world.app.delete("/instances/" + instance_id, expect_errors=True)
    assert reap_orphans(world.root) == []


# ---------------------------------------------------------------------------
# custom 503 pages


STATUS_LINES = [b"HTTP/1.1 503 Service Unavailable", b"HTTP/1.0 503", b"HTTP/1.1 200 OK",
                b"HTTP/1.1 999 Weird", b"HTTP/1.1 100 Continue", b"HTTP/1.1 204 No Content",
                b"HTTP/2 503", b"http/1.1 503 x", b"HTTP/1.1 503 \xff\xfe", b"HTTP/1.1 5O3 x",
                b"HTTP/1.1  503 x", b"HTTP/1.1 503 x\x00y", b"", b" HTTP/1.1 503 x"]
HEADER_LINES = [b"Content-Type: text/html", b"Cache-Control: no-cache", b"Connection: close",
                b"Content-Length: 5", b"Content-Length: 0", b"Content-Length: 99999",
                b"Content-Length: -1", b"Content-Length: 1, 2", b"Content-Length: x",
                b"Transfer-Encoding: chunked", b"Retry-After: 30", b"X-Empty:", b"Set-Cookie: a=b",
                b"Content-Type: text/html", b" folded: line", b"no colon", b": no name",
                b"X-\x7f: y", b"Host: \xff", b"X-Long: " + b"v" * 2000]


@st.composite
def custom503_pages(draw):
    kind = draw(st.sampled_from(["random", "near", "near", "near", "huge"]))
    if kind == "random":
        return Body(draw(st.binary(max_size=200)))
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]))
    status_line = draw(st.one_of(st.sampled_from(STATUS_LINES), st.binary(max_size=30)))
    headers = draw(st.lists(st.one_of(st.sampled_from(HEADER_LINES), st.binary(max_size=24)),
                            max_size=5))
    body = draw(st.one_of(st.just(b"sorry\n"), st.binary(max_size=100),
                          st.just(b"<html>" + b"x" * 1000 + b"</html>")))
    blank = draw(st.sampled_from([eol, eol, b"", eol + eol]))
    page = eol.join([status_line] + headers) + eol + blank + body
    if kind == "huge":
        page += b"x" * draw(st.integers(CUSTOM503_LIMIT - len(page) - 2,
                                        CUSTOM503_LIMIT - len(page) + 5000))
    return Body(page)


def check_custom503_put(world, instance_id, page, stored_before):
    url = "/instances/%s/custom503" % instance_id
    note("page (%d bytes): %r" % (len(page), page[:500]))
    response = world.app.put(url, page, expect_errors=True)
    count_status(response.status_int)
    assert response.status_int in BODY_STATUSES, response
    assert b"Traceback" not in response.body and "Traceback" not in response.errors
    assert (response.status_int == 413) == (len(page) > CUSTOM503_LIMIT), response
    stored = world.app.get(url).body
    expected = page if response.status_int == 201 else stored_before
    if stored != expected:
        figures.add("files_corrupted")
    assert stored == expected
    assert not layout_problems(world.state_dir)
    return response, stored


@pytest.fixture(scope="module")
def custom503_world(tmp_path_factory):
    world = daemon_world(tmp_path_factory, "hostile-custom503")
    yield world
    world.stop_configured_daemons()
    reap_orphans(world.root)


def test_random_and_near_valid_custom503_pages(custom503_world):
    world = custom503_world
    instance_id = str(uuid.uuid4())
    assert world.app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    stored = {"data": PAGE}

    @settings(max_examples=figures.scaled(1000, 5000))
    @given(page=custom503_pages())
    def run(page):
        _, stored["data"] = check_custom503_put(world, instance_id, page, stored["data"])

    try:
        run()
    finally:
        world.app.delete("/instances/" + instance_id)
    assert reap_orphans(world.root) == []


def ask_haproxy(port):
    """The first bytes haproxy answers a request with (its 503 page: no server is up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return sock.recv(64)


def test_custom503_pages_under_a_running_haproxy(custom503_world):
    """A page haproxy will not load is refused (409) and the old one put back;
    the same haproxy master keeps answering throughout."""
    world = custom503_world
    instance_id = str(uuid.uuid4())
    base = "/instances/" + instance_id
    assert world.app.put(base + "/custom503", PAGE).status_int == 201
    port = free_port()
    # No server in the backend: haproxy answers with the 503 page at once.
    template = "\n".join(HAPROXY_TEMPLATE[:-2] + ["backend app"]).replace(
        "@PORT@", str(port)) + "\n"
    assert world.app.put(base + "/haproxy", template.encode()).status_int == 201
    haproxy = daemon_for("haproxy", world.instance(instance_id), world.config)
    pid = haproxy.process().pid
    stored = {"data": PAGE}

    @settings(max_examples=figures.scaled(60, 300))
    @given(page=custom503_pages())
    def run(page):
        _, stored["data"] = check_custom503_put(world, instance_id, page, stored["data"])
        process = haproxy.process()
        assert process is not None and process.pid == pid, \
            "haproxy was restarted or stopped: %s" % describe_daemon(haproxy, pid)
        assert ask_haproxy(port).startswith(b"HTTP/1.")

    try:
        run()
    finally:
        world.app.delete(base)
    assert reap_orphans(world.root) == []
