"""A tenant's config, PUT through lighttpd as a controller would send it,
never runs code, never reaches another tenant's files or the API's own, and
never sees the request's environment (issue 18). Each case is the adversarial
review's, against real haproxy: before the fix the first ran its Lua as root
during the check, the next three were answered 201, the last broke
GET /manifest for the whole appliance."""
import os
import uuid

import pytest

from .conftest import pki_tool
from .helpers import free_port, haproxy_template, http_get
from .test_certificates import listener_certificate


@pytest.fixture
def marker(tmp_path):
    """A path that code run from a tenant's config would create."""
    path = str(tmp_path / "ran-as-root")
    yield path
    assert not os.path.exists(path), "a tenant's config ran code: %s exists" % path


# Text that is both a haproxy config and a Lua chunk: loaded by itself (the
# candidate file sits in the instance folder while haproxy checks it).
POLYGLOT = """--[[
global
    lua-load {INSTANCE_DIR}/.haproxy.candidate.tmp
    lua-load {INSTANCE_DIR}/haproxy.rendered.cfg
--]] os.execute("touch @MARKER@")
"""


@pytest.mark.parametrize("config", [
    POLYGLOT,
    POLYGLOT.replace("    lua-load", '    "${X-lua-load}"'),
    POLYGLOT.replace("    lua-load", "    \\x6cua-load"),
    'global\n    maxconn 10\n"${X-program}" p\n    "${X-command}" /bin/sh -c "touch @MARKER@"\n',
    "global\n    maxconn 10\n\\x70rogram p\n    command /bin/sh -c 'touch @MARKER@'\n",
    "global\n    maxconn 10\n.if 1\n    lua-load @MARKER@.lua\n.endif\n",
])
def test_a_config_that_would_run_code_is_refused_before_any_daemon_reads_it(
        api, instance_id, marker, config):
    reply = api.put("/instances/%s/haproxy" % instance_id, config.replace("@MARKER@", marker))
    assert reply.status == 409, reply
    assert reply.body.startswith("Invalid configuration\nline "), reply
    assert "[ALERT]" not in reply.body  # the scan answered: haproxy never saw it
    assert api.get("/instances/%s/haproxy" % instance_id).status == 404
    assert instance_id not in api.instances()


def test_another_tenants_certificate_is_out_of_reach_however_the_path_is_spelt(
        api, instance_id, backend):
    other = str(uuid.uuid4())
    ca = pki_tool.make_ca("other tenant's CA")
    try:
        assert api.put("/instances/%s/certificates/localhost.pem" % other,
                       listener_certificate(ca)[0]).status == 201
        reaching = "%s/certificates/localhost.pem" % other
        for base in ("..", '"${X-..}"', "\\x2e\\x2e", "{INSTANCE_DIR}/.."):
            config = "global\n    crt-base %s\n" % base + haproxy_template(
                free_port(), backend.port).replace(
                    "global\n", "").replace(
                    "    bind {MYIP}:", "    bind {MYIP}:%d ssl crt %s\n    bind {MYIP}:"
                    % (free_port(), reaching), 1)
            reply = api.put("/instances/%s/haproxy" % instance_id, config)
            assert reply.status == 409, (base, reply)
            assert "line " in reply.body, reply
        reply = api.put("/instances/%s/haproxy" % instance_id, haproxy_template(
            free_port(), backend.port, "    http-request return status 200 lf-file "
            "%s/instances/%s/certificates/localhost.pem\n" % (api.state_dir, other)))
        assert reply.status == 409 and "outside this instance's folder" in reply.body, reply
        assert instance_id not in api.instances()
    finally:
        assert api.delete("/instances/" + other).status == 200


def test_a_config_cannot_put_a_socket_on_the_apis_own_files(api, instance_id, backend):
    base = "/instances/" + instance_id
    page = "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"
    assert api.put(base + "/custom503", page).status == 201
    for target in ("custom503.http", "certificates/x.pem", "lock", "haproxy.pid"):
        reply = api.put(base + "/haproxy", haproxy_template(free_port(), backend.port).replace(
            "frontend fe\n", "frontend fe\n    bind unix@{INSTANCE_DIR}/%s\n" % target))
        assert reply.status == 409, (target, reply)
    path = os.path.join(api.state_dir, "instances", instance_id, "custom503.http")
    assert os.path.isfile(path) and not os.path.islink(path)
    assert api.get(base + "/custom503").body == page
    assert api.get("/manifest").status == 200


def test_daemons_start_with_a_clean_environment(api, instance_id, backend):
    """haproxy's env() would hand the request's CGI variables (the client
    certificate, the API's config path) to anyone who asks the frontend."""
    port = free_port()
    shown = "%[env(SSL_CLIENT_S_DN_CN)]|%[env(APPLIANCE_API_CONFIG)]|%[env(HTTPS)]|%[env(PATH)]"
    reply = api.put("/instances/%s/haproxy" % instance_id, haproxy_template(
        port, backend.port, "    http-request return status 200 content-type text/plain "
        "lf-string %s\n" % shown))
    assert reply.status == 201, reply
    status, _headers, body = http_get(port)
    assert status == 200
    assert body == b"|||/usr/sbin:/usr/bin:/sbin:/bin", body


def _stunnel_hiding_exec_in_a_long_line(marker):
    hidden = "; a harmless comment " + "x" * 16362 + "exec = /bin/sh" + " " * 16369
    return ("[svc]\naccept = {MYIP}:%d\ncert = {INSTANCE_DIR}/certificates/localhost.pem\n"
            "connect = 127.0.0.1:9\n%s\nexecArgs = sh -c 'touch %s'\n" % (
                free_port(), hidden, marker))


@pytest.mark.parametrize("service, make", [
    ("stunnel", _stunnel_hiding_exec_in_a_long_line),
    ("stunnel", lambda marker: "\ufeffinclude = /tmp\n[svc]\naccept = {MYIP}:%d\n"
     "connect = 127.0.0.1:9\n" % free_port()),
    ("haproxy", lambda marker: "global\n    stats socket 127.0.0.1:%d level admin\n"
     % free_port() + haproxy_template(free_port(), 9).replace("global\n", "")),
    ("haproxy", lambda marker: haproxy_template(free_port(), 9) + "    option tcp-check\n"
     "    tcp-check connect addr unix@/run/systemd/private\n"),
    ("haproxy", lambda marker: haproxy_template(free_port(), 9) +
     "log-forward lf\n    dgram-bind unix@{INSTANCE_DIR}/haproxy.cfg\n"
     "    log 127.0.0.1:514 local0\n"),
    # The second review: the master CLI, and the tenant's own admin socket, relayed.
    ("haproxy", lambda marker: haproxy_template(free_port(), 9).replace(
        "    server s1 127.0.0.1:9", "    server s1 stream+unix@master.sock")),
    ("haproxy", lambda marker: "global\n    stats socket {INSTANCE_DIR}/admin.sock level admin\n"
     + haproxy_template(free_port(), 9).replace("global\n", "").replace(
         "    server s1 127.0.0.1:9", "    server s1 unix@{INSTANCE_DIR}/admin.sock")),
    ("haproxy", lambda marker: "global\n    stats socket ipv4@127.0.0.1:%d level user level admin\n"
     % free_port() + haproxy_template(free_port(), 9).replace("global\n", "")),
    ("stunnel", lambda marker: "[cli]\naccept = {MYIP}:%d\n"
     "cert = {INSTANCE_DIR}/certificates/localhost.pem\nconnect = {INSTANCE_DIR}/admin.sock\n"
     % free_port()),
])
def test_what_the_review_got_past_the_scan_is_refused(api, instance_id, marker, service, make):
    ca = pki_tool.make_ca("tenant CA")
    base = "/instances/" + instance_id
    assert api.put(base + "/certificates/localhost.pem", listener_certificate(ca)[0]).status == 201
    reply = api.put(base + "/" + service, make(marker))
    assert reply.status == 409, reply
    assert reply.body.startswith("Invalid configuration\nline "), reply
    assert api.get(base + "/" + service).status == 404
