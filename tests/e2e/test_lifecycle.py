"""An instance's life through the API, with the real daemons: haproxy in front of a
test backend, stunnel in front of haproxy, the custom 503 page, failed changes
rolled back, and DELETE leaving nothing behind.

The module's instance (`lb`) lives through the tests that change its haproxy;
each test leaves it serving the backend. Other tests make their own instances.
"""
import json
import os
import types
import uuid

import pytest

from .helpers import (accepts, eventually, free_port, haproxy_template, http_get,
                      listening_socket, live_children, pid_gone, process_of, served_certificate,
                      stunnel_template)


def started_pid(line, service, instance, verb="started"):
    prefix = "%s daemon for %s %s (pid " % (service, instance, verb)
    assert line.startswith(prefix) and line.endswith(")"), line
    return int(line[len(prefix):-1])


def status_line(instance, state="OK"):
    return "%-52s%s" % (instance, state)


def service_line(service, pid):
    return "  %-17srunning (pid %d)" % (service, pid)


def assert_runs_config(pid, name, config_path):
    process_name, cmdline = process_of(pid)
    assert process_name == name
    assert config_path in cmdline


def frontend_body(port):
    status, _headers, body = http_get(port)
    assert status == 200
    return body


@pytest.fixture(scope="module")
def lb(api, backend):
    """An instance with haproxy in front of the test backend."""
    instance = str(uuid.uuid4())
    port = free_port()
    template = haproxy_template(port, backend.port)
    reply = api.put("/instances/%s/haproxy" % instance, template)
    state = types.SimpleNamespace(id=instance, port=port, template=template, first_put=reply,
                                  dir=os.path.join(api.instances_dir, instance), pid=None)
    if reply.status == 201:
        state.pid = started_pid(reply.lines[-1], "haproxy", instance)
    yield state
    api.delete("/instances/" + instance)


# --- haproxy ------------------------------------------------------------------------

def test_put_haproxy_starts_it(api, lb):
    reply = lb.first_put
    assert reply.status == 201, reply
    assert reply.content_type == "text/plain; charset=utf-8"
    assert reply.lines[:2] == ["OK", "Configuration file is valid"]
    assert len(reply.lines) == 3
    assert_runs_config(lb.pid, "haproxy", os.path.join(lb.dir, "haproxy.rendered.cfg"))
    assert live_children(lb.pid)  # master-worker: the master has its worker


def test_frontend_serves_the_backend(lb, backend):
    hits = backend.server.hits
    assert frontend_body(lb.port) == b"backend-ok"
    assert backend.server.hits == hits + 1


def test_service_status_shows_haproxy_running(api, lb):
    lines = api.service_status().splitlines()
    assert lines == [status_line(lb.id), service_line("haproxy", lb.pid)]


def test_status_counts_it(api, lb):
    reply = api.get("/status")
    status = json.loads(reply.body)
    assert status["haproxy_count"] == "1"
    assert status["stunnel_count"] == "0"


def test_get_returns_the_template_as_uploaded(api, lb):
    reply = api.get("/instances/%s/haproxy" % lb.id)
    assert reply.status == 200, reply
    assert reply.body == lb.template
    assert "{MYIP}" in reply.body
    with open(os.path.join(lb.dir, "haproxy.rendered.cfg")) as file:
        rendered = file.read()
    assert rendered == lb.template.replace("{MYIP}", "127.0.0.1")


def test_instances_lists_it(api, lb):
    assert api.instances() == [lb.id]
    reply = api.get("/instances/" + lb.id)
    assert (reply.status, reply.body) == (200, "OK\n")


def assert_unchanged(api, lb):
    """The old daemon still serves the old config."""
    assert api.service_pid(lb.id, "haproxy") == lb.pid
    assert frontend_body(lb.port) == b"backend-ok"
    assert api.get("/instances/%s/haproxy" % lb.id).body == lb.template
    with open(os.path.join(lb.dir, "haproxy.rendered.cfg")) as file:
        assert file.read() == lb.template.replace("{MYIP}", "127.0.0.1")


def test_invalid_config_is_refused_and_changes_nothing(api, lb):
    broken = lb.template.replace("    server s1", "    servr s1")
    reply = api.put("/instances/%s/haproxy" % lb.id, broken)
    assert reply.status == 409, reply
    assert reply.lines[0] == "Invalid configuration"
    assert "[ALERT]" in reply.body
    assert "unknown keyword 'servr'" in reply.body
    assert_unchanged(api, lb)


def test_config_that_cannot_start_is_refused_and_rolled_back(api, lb, backend):
    holder = listening_socket()  # the port the new config wants is taken
    try:
        taken = holder.getsockname()[1]
        reply = api.put("/instances/%s/haproxy" % lb.id, haproxy_template(taken, backend.port))
        assert reply.status == 409, reply
        assert reply.lines[0] == "Invalid configuration"
        assert "cannot bind socket" in reply.body
        assert "127.0.0.1:%d" % taken in reply.body
        assert_unchanged(api, lb)
    finally:
        holder.close()


def test_changed_config_is_reloaded(api, lb, backend):
    template = haproxy_template(
        lb.port, backend.port, "    http-response set-header X-Config v2\n")
    reply = api.put("/instances/%s/haproxy" % lb.id, template)
    assert reply.status == 201, reply
    assert reply.lines[:2] == ["OK", "Configuration file is valid"]
    assert started_pid(reply.lines[2], "haproxy", lb.id, "reloaded") == lb.pid
    lb.template = template

    def new_worker_answers():
        status, headers, body = http_get(lb.port)
        return status == 200 and body == b"backend-ok" and headers.get("x-config") == "v2"
    assert eventually(new_worker_answers)
    assert api.service_pid(lb.id, "haproxy") == lb.pid
    assert api.get("/instances/%s/haproxy" % lb.id).body == template


@pytest.mark.parametrize("how", [
    pytest.param(["-H", "Expect:"], id="original-workaround"),
    pytest.param([], id="curl-default"),
    pytest.param(["--http1.1", "-H", "Expect: 100-continue", "-v"], id="expect-100-continue"),
])
def test_put_with_and_without_expect(api, lb, how):
    reply = api.put("/instances/%s/haproxy" % lb.id, lb.template, *how)
    assert reply.status == 201, reply
    assert started_pid(reply.lines[-1], "haproxy", lb.id, "reloaded") == lb.pid
    if "-v" in how:
        assert "> Expect: 100-continue" in reply.stderr
        assert "< HTTP/1.1 100 Continue" in reply.stderr
    assert frontend_body(lb.port) == b"backend-ok"


def test_first_config_that_cannot_start_leaves_no_instance(api, instance_id):
    holder = listening_socket()
    try:
        template = haproxy_template(holder.getsockname()[1], 1)  # never reached
        reply = api.put("/instances/%s/haproxy" % instance_id, template)
        assert reply.status == 409, reply
        assert reply.lines[0] == "Invalid configuration"
        assert "cannot bind socket" in reply.body
    finally:
        holder.close()
    assert api.get("/instances/" + instance_id).status == 404
    assert not os.path.exists(os.path.join(api.instances_dir, instance_id))


@pytest.mark.parametrize("template", [
    pytest.param("", id="empty"),
    pytest.param("defaults\n    mode http\nbackend be\n    server s1 127.0.0.1:1\n",
                 id="backend-only"),
])
def test_config_without_a_listener_is_refused(api, instance_id, template):
    """haproxy -c exits 2 for these ("no error but will not start (no listener)"):
    the upload is unusable (409), not a failure of the appliance (500)."""
    reply = api.put("/instances/%s/haproxy" % instance_id, template)
    assert reply.status == 409, reply
    assert reply.lines[0] == "Invalid configuration"
    assert "no listener" in reply.body
    assert api.get("/instances/" + instance_id).status == 404


# --- stunnel in front of haproxy ------------------------------------------------------

def test_stunnel_in_front_of_haproxy(api, lb, listener_pki):
    reply = api.put("/instances/%s/certificates/localhost.pem" % lb.id, listener_pki.upload)
    assert reply.status == 201, reply
    assert reply.lines[0] == "OK"
    # A certificate upload reloads the instance's running daemons.
    assert started_pid(reply.lines[1], "haproxy", lb.id, "reloaded") == lb.pid
    stored = os.path.join(lb.dir, "certificates", "localhost.pem")
    assert os.stat(stored).st_mode & 0o777 == 0o600
    assert api.get("/instances/%s/certificates/localhost.pem" % lb.id).body.encode() == \
        served_certificate(listener_pki.upload)

    tls_port = free_port()
    reply = api.put("/instances/%s/stunnel" % lb.id, stunnel_template(tls_port, lb.port))
    assert reply.status == 201, reply
    assert reply.lines[0] == "OK"
    stunnel_pid = started_pid(reply.lines[-1], "stunnel", lb.id)
    assert_runs_config(stunnel_pid, "stunnel4", os.path.join(lb.dir, "stunnel.rendered.conf"))

    status, _headers, body = http_get(tls_port, context=listener_pki.context)
    assert (status, body) == (200, b"backend-ok")
    assert api.service_status().splitlines() == [
        status_line(lb.id), service_line("haproxy", lb.pid), service_line("stunnel", stunnel_pid)]
    assert json.loads(api.get("/status").body)["stunnel_count"] == "1"

    reply = api.delete("/instances/%s/stunnel" % lb.id)
    assert reply.status == 200, reply
    assert reply.lines == ["OK", "stunnel daemon %s killed." % lb.id]
    assert eventually(lambda: pid_gone(stunnel_pid))
    assert not accepts("127.0.0.1", tls_port)
    assert api.service_status().splitlines() == [status_line(lb.id),
                                                 service_line("haproxy", lb.pid)]
    assert api.get("/instances/%s/stunnel" % lb.id).status == 404
    assert frontend_body(lb.port) == b"backend-ok"


def test_stunnel_config_that_fails_is_refused(api, instance_id):
    """stunnel has no check mode: a config it cannot start with is refused at start."""
    reply = api.put("/instances/%s/stunnel" % instance_id,
                    stunnel_template(free_port(), free_port(), "missing.pem"))
    assert reply.status == 409, reply
    assert reply.lines[0] == "Invalid configuration"
    assert "No such file or directory" in reply.body
    assert "Configuration failed" in reply.body
    assert api.get("/instances/" + instance_id).status == 404
    assert not os.path.exists(os.path.join(api.instances_dir, instance_id))


# --- custom 503 page --------------------------------------------------------------------

PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\ncustom sorry page\n"


def test_custom503_page(api, instance_id):
    reply = api.put("/instances/%s/custom503" % instance_id, PAGE)
    assert reply.status == 201, reply
    assert reply.lines == ["OK"]  # no daemon runs yet: nothing to reload

    port = free_port()
    template = (
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        "frontend fe\n    bind {MYIP}:%d\n    default_backend be\n"
        "    errorfile 503 {INSTANCE_DIR}/custom503.http\n"
        "backend be\n" % port)
    reply = api.put("/instances/%s/haproxy" % instance_id, template)
    assert reply.status == 201, reply
    pid = started_pid(reply.lines[-1], "haproxy", instance_id)
    status, headers, body = http_get(port)
    assert (status, body) == (503, b"custom sorry page\n")
    assert headers["content-type"] == "text/plain"

    reply = api.put("/instances/%s/custom503" % instance_id, b"not an HTTP response\n")
    assert reply.status == 409, reply
    assert reply.lines[0].startswith("Not an HTTP response")
    too_big = b"HTTP/1.0 503 Service Unavailable\r\n\r\n" + b"x" * (16 * 1024)
    reply = api.put("/instances/%s/custom503" % instance_id, too_big)
    assert reply.status == 413, reply
    assert reply.lines[0] == "Request Entity Too Large"
    assert api.get("/instances/%s/custom503" % instance_id).body.encode() == PAGE
    assert http_get(port)[2] == b"custom sorry page\n"

    # A new page while haproxy runs: stored, haproxy reloaded, served.
    new_page = PAGE.replace(b"custom sorry page", b"second sorry page")
    reply = api.put("/instances/%s/custom503" % instance_id, new_page)
    assert reply.status == 201, reply
    assert reply.lines[0] == "OK"
    assert started_pid(reply.lines[1], "haproxy", instance_id, "reloaded") == pid
    assert eventually(lambda: http_get(port)[2] == b"second sorry page\n")

    # A PUT killed after storing its page, before the reload, left the
    # instance marked: the retry (the same bytes) reloads haproxy first.
    third_page = PAGE.replace(b"custom sorry page", b"third sorry page")
    folder = os.path.join(api.instances_dir, instance_id)
    with open(os.path.join(folder, "reload.pending"), "w") as named, \
            open(os.path.join(folder, "custom503.http"), "wb") as file:
        named.write("haproxy\n")
        file.write(third_page)
    assert http_get(port)[2] == b"second sorry page\n"
    reply = api.put("/instances/%s/custom503" % instance_id, third_page)
    assert reply.status == 201, reply
    assert started_pid(reply.lines[1], "haproxy", instance_id, "reloaded") == pid
    assert eventually(lambda: http_get(port)[2] == b"third sorry page\n")
    reply = api.put("/instances/%s/custom503" % instance_id, third_page)
    assert reply.lines == ["OK"]  # truly the same now: nothing to do


# --- DELETE ---------------------------------------------------------------------------------

def test_delete_instance_stops_everything(api, backend, listener_pki, instance_id):
    port, tls_port = free_port(), free_port()
    assert api.put("/instances/%s/certificates/localhost.pem" % instance_id,
                   listener_pki.upload).status == 201
    reply = api.put("/instances/%s/haproxy" % instance_id, haproxy_template(port, backend.port))
    assert reply.status == 201, reply
    haproxy_pid = started_pid(reply.lines[-1], "haproxy", instance_id)
    reply = api.put("/instances/%s/stunnel" % instance_id, stunnel_template(tls_port, port))
    assert reply.status == 201, reply
    stunnel_pid = started_pid(reply.lines[-1], "stunnel", instance_id)
    workers = live_children(haproxy_pid)
    assert workers
    assert http_get(tls_port, context=listener_pki.context)[2] == b"backend-ok"

    reply = api.delete("/instances/" + instance_id)
    assert reply.status == 200, reply
    assert reply.lines == ["OK", "stunnel daemon %s killed." % instance_id,
                           "haproxy daemon %s killed." % instance_id]
    for pid in [haproxy_pid, stunnel_pid] + workers:
        assert eventually(lambda: pid_gone(pid)), pid
    assert not accepts("127.0.0.1", port)
    assert not accepts("127.0.0.1", tls_port)
    assert instance_id not in api.instances()
    assert not os.path.exists(os.path.join(api.instances_dir, instance_id))
    assert instance_id not in api.service_status()
    reply = api.get("/instances/" + instance_id)
    assert (reply.status, reply.body) == (404, "Not Found\n")
    reply = api.delete("/instances/" + instance_id)
    assert (reply.status, reply.body) == (404, "Not Found\n")


def test_delete_module_instance(api, lb):
    """Last: the module's instance goes too (haproxy and the certificate left by stunnel)."""
    workers = live_children(lb.pid)
    reply = api.delete("/instances/" + lb.id)
    assert reply.status == 200, reply
    assert reply.lines == ["OK", "haproxy daemon %s killed." % lb.id]
    for pid in [lb.pid] + workers:
        assert eventually(lambda: pid_gone(pid)), pid
    assert not accepts("127.0.0.1", lb.port)
    assert api.instances() == []
    assert not os.path.exists(lb.dir)
    assert api.get("/instances/" + lb.id).status == 404
    assert api.delete("/instances/" + lb.id).status == 404
