"""Which service IPs a rendered config binds."""
import pytest

from appliance_api.system.network import bound_addresses

MYIP = "10.0.0.2"


@pytest.mark.parametrize("line, expected", [
    ("bind 192.0.2.10:80", {"192.0.2.10"}),
    ("  bind 192.0.2.10:443 ssl crt /x.pem", {"192.0.2.10"}),
    ("bind 192.0.2.10:80,192.0.2.11:81", {"192.0.2.10", "192.0.2.11"}),
    ("bind ipv4@192.0.2.12:80", {"192.0.2.12"}),
    ("bind [2001:db8::5]:443", {"2001:db8::5"}),
    ("bind ipv6@2001:db8::6:443", {"2001:db8::6"}),
    ("bind 2001:db8::7:8000-8010", {"2001:db8::7"}),
    ("bind :80", set()),
    ("bind *:80", set()),
    ("bind 0.0.0.0:80", set()),
    ("bind :::80", set()),
    ("bind 127.0.0.1:80", set()),
    ("bind ::1:80", set()),
    ("bind 10.0.0.2:80", set()),            # the management address
    ("bind unix@/run/x.sock", set()),
    ("bind /run/x.sock", set()),
    ("bind fd@3", set()),
    ("bind www.example.com:80", set()),
    ("# bind 192.0.2.99:80", set()),
    ("server s1 192.0.2.50:80", set()),     # a backend is not a service IP
])
def test_haproxy_bind_lines(line, expected):
    assert bound_addresses("haproxy", "frontend f\n%s\n" % line, MYIP) == expected


@pytest.mark.parametrize("line, expected", [
    ("accept = 192.0.2.20:443", {"192.0.2.20"}),
    ("accept=192.0.2.21:443", {"192.0.2.21"}),
    ("accept = :::443", set()),
    ("accept = 443", set()),
    ("accept = 2001:db8::20:443", {"2001:db8::20"}),
    ("connect = 192.0.2.30:80", set()),
    ("; accept = 192.0.2.31:443", set()),
])
def test_stunnel_accept_lines(line, expected):
    assert bound_addresses("stunnel", "[svc]\n%s\n" % line, MYIP) == expected


def test_listeners_and_overlap():
    from appliance_api.system.network import describe, listeners, overlap

    found = listeners("haproxy", "bind 192.0.2.1:80,:8000-8010\nbind [2001:db8::1]:443\n"
                                 "bind unix@/x.sock\nbind www.example.com:80\n")
    assert [describe(listener) for listener in found] == [
        "192.0.2.1:80", "*:8000-8010", "[2001:db8::1]:443"]
    assert listeners("stunnel", "accept = 443\n")[0][0] is None
    one, wildcard, six = found
    assert overlap(one, one) and overlap(wildcard, listeners("haproxy", "bind 192.0.2.9:8005")[0])
    assert not overlap(one, listeners("haproxy", "bind 192.0.2.2:80")[0])
    assert not overlap(one, listeners("haproxy", "bind 192.0.2.1:81")[0])
    assert not overlap(wildcard, listeners("haproxy", "bind :8011")[0])
