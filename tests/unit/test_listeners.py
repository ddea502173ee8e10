"""GET /listeners and /listeners/:listener (the later draft's view), in process:
the exact JSON for each type of listener."""
import json
import os

import pytest

from test_read_endpoints import A, B, make_instance

C = "0e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"

HTTP = """global
    maxconn 100
defaults
    mode http
frontend web
    bind {MYIP}:8080
    default_backend app
backend app
    server s1 10.0.0.1:80
"""
TCP = """defaults
    timeout connect 5s
listen db
    bind 10.0.0.9:5432
    server s1 10.0.0.1:5432
"""
HTTPS_BY_HAPROXY = """defaults
    mode http
frontend web
    bind 10.0.0.9:443 ssl crt {INSTANCE_DIR}/certificates/www.example.com.pem
    default_backend app
backend app
    server s1 10.0.0.1:80
"""


def write(instance, name, text):
    with open(os.path.join(instance.dir, name), "w") as file:
        file.write(text)


def listener(state_dir, instance_id, haproxy=None, stunnel=None):
    instance = make_instance(state_dir, instance_id)
    if haproxy is not None:
        write(instance, "haproxy.cfg", haproxy)
    if stunnel is not None:
        write(instance, "stunnel.conf", stunnel)
    return instance


def get_json(app, path, status=200):
    response = app.get(path, expect_errors=status != 200)
    assert response.status_int == status
    assert response.content_type == "application/json"
    return json.loads(response.text)


def test_http_listener_running(app, state_dir, fake_daemons):
    instance = listener(state_dir, A, haproxy=HTTP)
    fake_daemons("haproxy", instance.rendered("haproxy"), instance.pid_file("haproxy"))
    assert get_json(app, "/listeners/" + A) == {
        "id": A, "status": "OK", "type": "HTTP", "haproxy": "running"}


def test_tcp_listener_stopped_is_down(app, state_dir):
    listener(state_dir, A, haproxy=TCP)
    assert get_json(app, "/listeners/" + A) == {
        "id": A, "status": "DOWN", "type": "TCP", "haproxy": "stopped"}


def test_https_through_stunnel_degraded(app, state_dir, fake_daemons):
    instance = listener(state_dir, A, haproxy=HTTP, stunnel="[https]\naccept = 443\n")
    fake_daemons("haproxy", instance.rendered("haproxy"), instance.pid_file("haproxy"))
    assert get_json(app, "/listeners/" + A) == {
        "id": A, "status": "DEGRADED", "type": "HTTPS", "haproxy": "running",
        "stunnel": "stopped"}


def test_https_terminated_by_haproxy(app, state_dir):
    listener(state_dir, A, haproxy=HTTPS_BY_HAPROXY)
    assert get_json(app, "/listeners/" + A) == {
        "id": A, "status": "DOWN", "type": "HTTPS", "haproxy": "stopped"}


def test_list_is_sorted_and_shows_a_listener_with_only_a_certificate(app, state_dir):
    listener(state_dir, B, haproxy=TCP)
    listener(state_dir, A, haproxy=HTTP)
    only_certificate = make_instance(state_dir, C)
    write(only_certificate, "certificates/www.example.com.pem", "pem")
    assert get_json(app, "/listeners") == [
        {"id": C, "status": "OK", "type": None},
        {"id": A, "status": "DOWN", "type": "HTTP", "haproxy": "stopped"},
        {"id": B, "status": "DOWN", "type": "TCP", "haproxy": "stopped"}]


def test_empty_list_and_missing_listener(app):
    assert get_json(app, "/listeners") == []
    response = app.get("/listeners/" + A, expect_errors=True)
    assert (response.status_int, response.text) == (404, "Not Found\n")
    assert app.get("/listeners/not-an-id", expect_errors=True).status_int == 403


@pytest.mark.parametrize("text, expected", [
    ("listen x\n    bind :80\n", "TCP"),
    ("defaults\n    mode http\nlisten x\n    bind :80\n", "HTTP"),
    # The section's own mode wins, wherever it is written in the section.
    ("defaults\n    mode http\nfrontend x\n    bind :80\n    mode tcp\n", "TCP"),
    # A later defaults section applies to what follows it only.
    ("frontend x\n    bind :80\ndefaults\n    mode http\n", "TCP"),
    # A backend's mode is not the listener's.
    ("backend b\n    mode http\nfrontend x\n    bind :80\n", "TCP"),
    # The first section that binds decides; a frontend without bind does not.
    ("frontend idle\n    mode http\nfrontend x\n    mode tcp\n    bind :1\n", "TCP"),
    ("frontend x\n    bind :443 ssl crt /x.pem  # tls\n", "HTTPS"),
    ("frontend x\n    bind :80 # ssl in a comment\n", "TCP"),
    ("frontend x\n    bind :80\nfrontend y\n    bind :443 ssl crt /x.pem\n", "HTTPS"),
    # Every defaults section starts again from tcp, unless it comes from another.
    ("defaults\n    mode http\nbackend b\ndefaults\n    timeout client 1s\n"
     "frontend x\n    bind :80\n", "TCP"),
    ("defaults web\n    mode http\ndefaults\n    mode tcp\nfrontend x from web\n"
     "    bind :80\n", "HTTP"),
    ("defaults web\n    mode http\ndefaults more from web\nfrontend x\n    bind :80\n", "HTTP"),
    # A log-forward section binds too, but is no frontend.
    ("defaults\n    mode http\nfrontend x\n    bind :80\nlog-forward l\n"
     "    bind :514 ssl crt /x.pem\n", "HTTP"),
])
def test_haproxy_listener_type(text, expected):
    from appliance_api.configread import haproxy_listener_type

    assert haproxy_listener_type(text) == expected


@pytest.mark.parametrize("text, terminates", [
    ("[https]\naccept = 443\nconnect = 80\n", True),
    ("[out]\nclient = yes\naccept = 80\nconnect = 10.0.0.1:443\n", False),
    ("client = yes\n[out]\naccept = 80\n[in]\nclient = no\naccept = 443\n", True),
    # The global part sets every service's default. (stunnel has no comment
    # after a value: "client = yes ; x" is refused at its start, so not stored.)
    ("; every service\nclient = yes\n[out]\naccept = 80\n", False),
    ("; no service at all\nforeground = yes\n", False),
])
def test_stunnel_terminates_tls(text, terminates):
    from appliance_api.configread import stunnel_terminates_tls

    assert stunnel_terminates_tls(text) is terminates


def test_a_stunnel_that_only_starts_tls_outward_is_not_https(app, state_dir):
    listener(state_dir, A, haproxy=HTTP, stunnel="[out]\nclient = yes\naccept = 8080\n")
    assert get_json(app, "/listeners/" + A)["type"] == "HTTP"


