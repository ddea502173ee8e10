"""configscan: listeners read with certainty or refused, the files a config
names kept inside its own instance folder, and "in use" decided the way the
daemons resolve paths (crt-base, folders, // and ..)."""
import os

import pytest

from appliance_api.configscan import Scan
from appliance_api.errors import Conflict

MYIP = "10.0.0.2"
STATE = "/srv/state"
OWN = STATE + "/instances/11111111-1111-4111-8111-111111111111"
OTHER = STATE + "/instances/22222222-2222-4222-8222-222222222222"


def haproxy(line):
    return Scan("haproxy", "global\n    maxconn 10\nfrontend f\n%s\n" % line, OWN)


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
    ("# bind 192.0.2.99:80", set()),
    ("bind 192.0.2.13:80 # comment", {"192.0.2.13"}),
    ("server s1 192.0.2.50:80", set()),     # a backend is not a service IP
])
def test_haproxy_service_ips(line, expected):
    scan = haproxy(line)
    assert scan.problems == []
    assert scan.service_ips(MYIP) == expected


@pytest.mark.parametrize("line", [
    "bind localhost:8080",
    'bind "127.0.0.1:8080"',
    "bind '192.0.2.1:80'",
    "bind ${ADDR}:80",
    "bind $ADDR:80",
    "bind 127.0.0.1\\:8080",
    "bind www.example.com:80",
    "bind fd@3",
    "bind sockpair@4",
    "bind 192.0.2.1",
    "bind 192.0.2.1:http",
    "bind 192.0.2.1:70000",
    'bind "192.0.2.1:80',
])
def test_listening_lines_that_are_not_literal_are_refused_with_their_line(line):
    scan = haproxy(line)
    assert len(scan.problems) == 1, scan.problems
    assert scan.problems[0].startswith("line 4: %s: " % line.strip())
    with pytest.raises(Conflict) as refused:
        scan.check(STATE)
    assert refused.value.detail.startswith("line 4: ")


def test_a_stats_socket_on_an_address_is_a_listener():
    scan = Scan("haproxy", "global\n    stats socket ipv4@192.0.2.40:9999 level user\n", OWN)
    assert [str(l) for l in scan.listeners] == ["192.0.2.40:9999"]
    assert haproxy("").listeners == []


@pytest.mark.parametrize("line, expected", [
    ("accept = 192.0.2.20:443", {"192.0.2.20"}),
    ("accept=192.0.2.21:443", {"192.0.2.21"}),
    ("Accept = 192.0.2.22:443", {"192.0.2.22"}),
    ("accept = :::443", set()),
    ("accept = 443", set()),
    ("accept = 2001:db8::20:443", {"2001:db8::20"}),
    ("connect = 192.0.2.30:80", set()),
    ("; accept = 192.0.2.31:443", set()),
])
def test_stunnel_service_ips(line, expected):
    scan = Scan("stunnel", "[svc]\n%s\n" % line, OWN)
    assert scan.problems == []
    assert scan.service_ips(MYIP) == expected


def test_stunnel_host_names_are_refused():
    scan = Scan("stunnel", "[svc]\naccept = localhost:443\n", OWN)
    assert scan.problems == ["line 2: accept = localhost:443: localhost:443 is not a literal "
                             "[address:]port (use an IP address, [IPv6], * or {MYIP}; host "
                             "names are refused)"]


def test_listeners_overlap():
    found = haproxy("bind 192.0.2.1:80,:8000-8010\nbind [2001:db8::1]:443").listeners
    assert [str(listener) for listener in found] == ["192.0.2.1:80", "*:8000-8010",
                                                     "[2001:db8::1]:443"]
    one, wildcard, _six = found
    assert one.overlaps(one) and wildcard.overlaps(haproxy("bind 192.0.2.9:8005").listeners[0])
    assert not one.overlaps(haproxy("bind 192.0.2.2:80").listeners[0])
    assert not one.overlaps(haproxy("bind 192.0.2.1:81").listeners[0])
    assert not wildcard.overlaps(haproxy("bind :8011").listeners[0])


@pytest.mark.parametrize("line", [
    "stats socket %s/haproxy.pid" % OTHER,
    "stats socket %s/../22222222-2222-4222-8222-222222222222/haproxy.pid" % OWN,
    "errorfile 503 %s//custom503.http" % OTHER,
    "errorfile 503 %s/status-sample.json" % STATE,
    "bind unix@%s/x.sock" % OTHER,
    "stats socket %s/haproxy.pid" % OWN,        # the API's own files in its own folder
    "stats socket %s/master.sock" % OWN,
    "errorfile 503 %s/lock" % OWN,
    "errorfile 503 ../22222222-2222-4222-8222-222222222222/custom503.http",
])
def test_files_outside_the_own_folder_in_the_state_folder_are_refused(line):
    scan = haproxy(line)
    with pytest.raises(Conflict) as refused:
        scan.check(STATE)
    assert refused.value.detail.startswith("line 4: ")


@pytest.mark.parametrize("line", [
    "errorfile 503 %s/custom503.http" % OWN,
    "bind 192.0.2.1:443 ssl crt %s/certificates/www.example.com.pem" % OWN,
    "stats socket %s/stats.sock" % OWN,
    "log /dev/log local0",
    "bind :443 ssl crt %s/certificates/x.pem ca-file /etc/ssl/certs/ca-certificates.crt" % OWN,
    "http-request redirect location /login",
    "http-response set-header Content-Type text/html",
])
def test_own_files_and_system_paths_are_fine(line):
    haproxy(line).check(STATE)


def test_stunnel_files_must_be_absolute_and_inside():
    good = Scan("stunnel", "[s]\naccept = 443\ncert = %s/certificates/a.pem\n" % OWN, OWN)
    good.check(STATE)
    relative = Scan("stunnel", "[s]\naccept = 443\ncert = certificates/a.pem\n", OWN)
    assert relative.problems[0].startswith("line 3: cert = certificates/a.pem: use an absolute")
    foreign = Scan("stunnel", "[s]\naccept = 443\nkey = %s/certificates/a.pem\n" % OTHER, OWN)
    with pytest.raises(Conflict):
        foreign.check(STATE)


CERT = OWN + "/certificates/www.example.com.pem"


@pytest.mark.parametrize("config, in_use", [
    ("frontend f\n    bind :443 ssl crt %s\n" % CERT, True),
    ("global\n    crt-base %s/certificates\nfrontend f\n    bind :443 ssl crt www.example.com.pem\n"
     % OWN, True),
    ("frontend f\n    bind :443 ssl crt %s/certificates\n" % OWN, True),          # a folder
    ("frontend f\n    bind :443 ssl crt %s/certificates/\n" % OWN, True),
    ("frontend f\n    bind :443 ssl crt %s//certificates//www.example.com.pem\n" % OWN, True),
    ("frontend f\n    bind :443 ssl crt certificates/www.example.com.pem\n", True),  # cwd
    ("backend b\n    server s 192.0.2.1:443 ssl ca-file %s\n" % CERT, True),
    ("frontend f\n    bind :443 ssl crt %s/certificates/other.pem\n" % OWN, False),
    ("frontend f\n    bind :443 ssl crt %s.bak\n" % CERT, False),
    ("global\n    crt-base /etc/ssl\nfrontend f\n    bind :443 ssl crt www.example.com.pem\n",
     False),
])
def test_in_use_follows_the_daemons_path_rules(config, in_use):
    assert Scan("haproxy", config, OWN).names_file(CERT) is in_use


@pytest.mark.parametrize("config, in_use", [
    ("frontend f\n    bind :443 ssl crt-list %s/crt-lists/listener\n" % OWN, True),
    ("frontend f\n    bind :443 ssl crt-list %s//crt-lists/./listener\n" % OWN, True),
    ("frontend f\n    bind :443 ssl crt-list %s/crt-lists/listener-2\n" % OWN, False),
    ("frontend f\n    bind :443 ssl crt %s\n" % CERT, False),
])
def test_a_crt_list_is_in_use_where_a_bind_reads_it(config, in_use):
    assert Scan("haproxy", config, OWN).names_file(OWN + "/crt-lists/listener") is in_use


@pytest.mark.parametrize("config, in_use", [
    ("[s]\naccept = 443\ncert = %s\n" % CERT, True),
    ("[s]\naccept = 443\ncert = %s/x.pem\nkey = %s\n" % (OWN, CERT), True),
    ("[s]\naccept = 443\nCAfile = %s\n" % CERT, True),
    ("[s]\naccept = 443\nCApath = %s/certificates\n" % OWN, True),
    ("[s]\naccept = 443\ncert = %s/certificates/x.pem\n" % OWN, False),
])
def test_in_use_for_stunnel(config, in_use):
    assert Scan("stunnel", config, OWN).names_file(CERT) is in_use
    assert os.path.isabs(CERT)


# Found in review: what a tenant's config could still do behind the scan's back.
@pytest.mark.parametrize("config, why", [
    ("program evil\n    command /bin/sh -c id\n", "runs a program as root"),
    ("backend b\n    option external-check\n    external-check command /bin/sh\n",
     "runs a program as root"),
    ("global\n    lua-load /tmp/x.lua\n", "loads code"),
    ("global\n    default-path parent\n", "changes how relative paths are read"),
    ("global\n    setenv A /tmp\n", "sets variables that paths could use"),
    ("global\n    chroot /\n", "moves the daemon's file system root"),
    ("frontend f\n    bind :443 ssl crt /etc/appliance-api/pki/sync-client.pem\n",
     "outside this instance's folder"),
    ("global\n    stats socket /etc/x mode 600\n", "outside this instance's folder"),
    ("frontend f\n    bind :443 ssl crt \"${A}/k.pem\"\n", "environment variables are not allowed"),
    ("frontend f\n    bind [fe80::1%lo]:443\n", "is not a literal address:port"),
])
def test_what_a_tenant_config_may_not_do(config, why):
    assert_refused(Scan("haproxy", config, OWN), why)


def assert_refused(scan, why):
    with pytest.raises(Conflict) as refused:
        scan.check(STATE)
    assert why in refused.value.detail, refused.value.detail


@pytest.mark.parametrize("config", [
    "global\n    log /dev/log local0\n",
    "backend b\n    server s 192.0.2.1:443 ssl ca-file /etc/ssl/certs/ca-certificates.crt\n",
    "frontend f\n    bind :443 ssl crt %s/certificates/x.pem\n" % OWN,
    "frontend f\n    bind :443 ssl crt-list %s/crt-lists/listener-1\n" % OWN,
    "frontend f\n    bind :443 ssl crt-list %s//crt-lists/./a.b_c-d\n" % OWN,
    "global\n    stats socket %s/stats.sock mode 600\n" % OWN,
])
def test_system_files_and_own_files_are_still_fine(config):
    Scan("haproxy", config, OWN).check(STATE)


def test_stunnel_exec_is_refused():
    scan = Scan("stunnel", "[s]\naccept = 443\nexec = /bin/sh\n", OWN)
    assert scan.problems[0].startswith("line 3: exec = /bin/sh: exec runs a program as root")


def test_a_local_peer_listens_and_an_ipv4_mapped_address_is_the_ipv4_one():
    scan = Scan("haproxy", "peers p\n    peer me 0.0.0.0:8081\n", OWN)
    assert [str(l) for l in scan.listeners] == ["*:8081"]
    assert scan.service_ips(MYIP) == set()
    mapped = haproxy("bind [::ffff:192.0.2.5]:443").listeners[0]
    assert mapped.overlaps(haproxy("bind 192.0.2.5:443").listeners[0])
    assert haproxy("bind [::ffff:192.0.2.5]:443").service_ips(MYIP) == {"192.0.2.5"}


# Issue 18: what the scan reads must be what haproxy 2.6 reads (its
# parse_line(): quotes, escapes, environment expansion), and every file a
# daemon reads or makes must be judged by what it is for.
@pytest.mark.parametrize("line, why", [
    ('"${X-lua-load}" /tmp/x.lua', "environment variables are not allowed"),
    ('"${X-program}" p', "environment variables are not allowed"),
    ('    "${X-command}" /bin/sh -c "id"', "environment variables are not allowed"),
    ('crt-base "${X-..}"', "environment variables are not allowed"),
    ('crt-base "$X"', "environment variables are not allowed"),
    ('crt-base "${X[*]}"', "environment variables are not allowed"),
    ("\\x6cua-load /tmp/x.lua", "lua-load loads code"),
    ("l'ua'-load /tmp/x.lua", "lua-load loads code"),
    ('"lua-load" /tmp/x.lua', "lua-load loads code"),
    ("lua\\-load /tmp/x.lua", None),           # not an escape: haproxy keeps the backslash
    ("no lua-load /tmp/x.lua", "lua-load loads code"),
    ("\\x70rogram p", "program runs a program as root"),
    ("ssl-provider-path /tmp", "loads code"),
    ("ssl-engine rdrand", "loads code"),
    ("unix-bind prefix /tmp", "changes how socket paths are read"),
    ("insecure-fork-wanted", "lets the daemon run programs"),
    (".if 1", "conditional blocks and messages are not allowed"),
    (".diag hello", "conditional blocks and messages are not allowed"),
    ('"".if 1', "conditional blocks and messages are not allowed"),
    ("[/etc/x:1]", "a [scope] line"),
    ("crt-base \\x2e\\x2e", None),            # decoded: .., judged below as a base
    ("bind :80 name a\\x00b", "haproxy's word would end there"),
    ("bind :80 name a\\xZZ", "invalid \\x escape"),
    ("bind :80\x0bcrt /etc/x.pem", "control character"),
    ("bind :80\rlua-load /x.lua", "control character"),
    ("bind :80\x00", "control character"),
    ("bind :80\u2028lua-load /x", "line separator"),
])
def test_haproxys_quoting_escapes_and_expansion_are_read_as_haproxy_reads_them(line, why):
    scan = Scan("haproxy", "global\n%s\n" % line, OWN)
    if why is None:
        assert not [p for p in scan.problems if "loads code" in p], scan.problems
        return
    assert len(scan.problems) == 1 and why in scan.problems[0], scan.problems
    assert scan.problems[0].startswith("line 2: ")
    assert "\x0b" not in scan.problems[0] and "\r" not in scan.problems[0]


def test_a_crlf_file_is_read_as_haproxy_reads_it():
    scan = Scan("haproxy", "global\r\n    maxconn 10\r\nfrontend f\r\n    bind 192.0.2.1:80\r\n",
                OWN)
    assert scan.problems == [] and scan.service_ips(MYIP) == {"192.0.2.1"}


@pytest.mark.parametrize("config, why", [
    # crt-base .. then a path into another instance: resolved as haproxy does.
    ("global\n    crt-base ..\nfrontend f\n    bind :443 ssl crt "
     "22222222-2222-4222-8222-222222222222/certificates/x.pem\n", "outside this instance"),
    ("global\n    crt-base \\x2e\\x2e\nfrontend f\n    bind :443 ssl crt "
     "22222222-2222-4222-8222-222222222222/certificates/x.pem\n", "outside this instance"),
    ("global\n    ca-base %s\nbackend b\n    server s 192.0.2.1:443 ssl ca-file "
     "../../22222222-2222-4222-8222-222222222222/certificates/ca.pem\n" % (OWN + "/certificates"),
     "outside this instance"),
    ("global\n    crt-base /etc/ssl/private\n", "outside this instance's folder"),
    ("global\n    key-base /etc/ssl/private\n", "outside this instance's folder"),
    ("frontend f\n    bind :443 ssl crt %s/custom503.http\n" % OWN,
     "not in the instance's certificates folder"),
    # A crt-list only as the API stores it: haproxy reads the paths in it.
    ("frontend f\n    bind :443 ssl crt-list %s/certificates/x.pem\n" % OWN,
     "not one of the instance's crt-lists"),
    ("frontend f\n    bind :443 ssl crt-list %s/crt-lists/x\n" % OTHER,
     "not one of the instance's crt-lists"),
    ("frontend f\n    bind :443 ssl crt-list %s/crt-lists/sub/x\n" % OWN,
     "not one of the instance's crt-lists"),
    ("frontend f\n    bind :443 ssl crt-list %s/crt-lists/../certificates/x.pem\n" % OWN,
     "not one of the instance's crt-lists"),
    ("frontend f\n    bind :443 ssl crt-list /tmp/list\n", "not one of the instance's crt-lists"),
    ("frontend f\n    bind :443 ssl crt-list crt-lists/x\n",
     "crt-list crt-lists/x: name it {INSTANCE_DIR}/crt-lists/<name>"),
    ("frontend f\n    bind :443 ssl crt %s/crt-lists/x\n" % OWN,
     "not in the instance's certificates folder"),
    ("global\n    stats socket %s/crt-lists/x.sock mode 600\n" % OWN,
     "a file the API keeps for the instance"),
    # Pages the world can read: only the instance's 503 page or Debian's.
    ("frontend f\n    http-request return status 200 lf-file /etc/appliance-api/pki/server.pem\n",
     "outside this instance's folder"),
    ("frontend f\n    http-request return status 200 file /etc/shadow\n",
     "outside this instance's folder"),
    ("frontend f\n    http-error status 503 errorfile %s/certificates/x.pem\n" % OWN,
     "not the instance's 503 page"),
    ("defaults\n    errorfile 503 /etc/shadow\n", "outside this instance's folder"),
    # Maps and ACL files are read at start, and lookups show their content.
    ("frontend f\n    http-request set-header X %[src,map_ip(/etc/shadow)]\n",
     "outside this instance's folder"),
    ("frontend f\n    http-request set-header X %[str(a),lower,map(/etc/passwd,x)]\n",
     "outside this instance's folder"),
    ("frontend f\n    acl a src -f /etc/passwd\n", "outside this instance's folder"),
    ("frontend f\n    http-request set-map(/etc/x.map) a b\n", "outside this instance's folder"),
    ("global\n    server-state-file /etc/shadow\n", "outside this instance's folder"),
    ("global\n    h1-case-adjust-file /etc/shadow\n", "outside this instance's folder"),
    ("frontend f\n    filter spoe engine e config /etc/shadow\n",
     "outside this instance's folder"),
    ("ring r\n    backing-file /etc/cron.d/x\n", "outside this instance's folder"),
    # Sockets the daemon makes must not land on the API's files.
    ("frontend f\n    bind unix@%s/custom503.http\n" % OWN, "a file the API keeps"),
    ("global\n    stats socket %s/certificates/x.pem\n" % OWN, "a file the API keeps"),
    ("frontend f\n    bind %s/certificates\n" % OWN, "a file the API keeps"),
    ("global\n    pidfile %s/custom503.http\n" % OWN, "a file the API keeps"),
    # Sockets it connects to: a tenant's backend must not be the machine's.
    ("backend b\n    server s unix@/run/systemd/private\n", "a socket to connect to"),
    ("backend b\n    server s /run/dbus/system_bus_socket\n", "a socket to connect to"),
    ("backend b\n    server s unix@%s/master.sock\n" % OWN, "the API's own file"),
    ("backend b\n    server s abns@other\n", "abstract sockets are not allowed"),
    ("backend b\n    server s fd@3\n", "descriptors and abstract sockets"),
    ("global\n    log fd@4 local0\n", "descriptors and abstract sockets"),
    ("global\n    log /run/systemd/journal/socket local0\n", "a socket to connect to"),
    ("frontend f\n    bind abns@x\n", "descriptors and abstract sockets"),
    ("frontend f\n    bind :80 namespace other\n", "another network namespace"),
    ("backend b\n    server s 192.0.2.1:80 namespace other\n", "another network namespace"),
])
def test_every_file_is_judged_by_what_the_daemon_does_with_it(config, why):
    assert_refused(Scan("haproxy", config, OWN), why)


@pytest.mark.parametrize("config", [
    "global\n    ca-base /etc/ssl/certs\n",
    "backend b\n    server s 192.0.2.1:443 ssl verify required ca-file @system-ca\n",
    "defaults\n    errorfile 400 /etc/haproxy/errors/400.http\n",
    "frontend f\n    http-request return status 503 file %s/custom503.http\n" % OWN,
    "global\n    log stdout format raw local0\n    log 127.0.0.1:514 local0\n",
    "global\n    server-state-file %s/servers-state\n" % OWN,
    "frontend f\n    acl api path_beg /api\n    http-request redirect location /login if api\n",
    "frontend f\n    bind :443 ssl crt %s/certificates\n" % OWN,
    "userlist u\n    user admin password $6$salt$hash\n",
    "frontend f\n    http-request set-header X-Price \\$5\n",
    "frontend f\n    http-request set-header X \"\\$5\"\n",
])
def test_what_tenants_use_is_still_fine(config):
    Scan("haproxy", config, OWN).check(STATE)


def test_paths_are_judged_as_the_kernel_resolves_them(tmp_path):
    own = tmp_path / "instances" / "11111111-1111-4111-8111-111111111111"
    other = tmp_path / "instances" / "22222222-2222-4222-8222-222222222222"
    (own / "certificates").mkdir(parents=True)
    (other / "certificates").mkdir(parents=True)
    (other / "certificates" / "x.pem").write_text("key")
    (own / "certificates" / "link.pem").symlink_to(other / "certificates" / "x.pem")
    scan = Scan("haproxy", "frontend f\n    bind :443 ssl crt %s/certificates/link.pem\n" % own,
                str(own))
    with pytest.raises(Conflict) as refused:
        scan.check(str(tmp_path))
    assert "outside this instance" in refused.value.detail


@pytest.mark.parametrize("line, why", [
    ("include = %s/more" % OWN, "include reads configuration the API has not checked"),
    ("engineCtrl = SO_PATH:/tmp/x.so", "engineCtrl".lower() + " loads code"),
    ("engine = dynamic", "engine loads code"),
    ("pty = yes", "runs a program as root"),
    ("config = VerifyCAFile:/etc/ssl/private/x.pem", "runs OpenSSL configuration commands"),
    ("config = ServerInfoFile:passwd", "runs OpenSSL configuration commands"),
    ("libwrap = yes", "hosts.allow"),
    ("RNDfile = /etc/passwd", "outside this instance's folder"),
    ("output = %s/custom503.http" % OWN, "a file the API keeps"),
    ("connect = /run/systemd/private", "a socket to connect to"),
    ("connect = %s/admin.sock" % OWN, "a socket to connect to"),
    ("CAfile = /etc/ssl/private/x.pem", "outside this instance's folder"),
    ("cert = %s/custom503.http" % OWN, "not in the instance's certificates folder"),
    ("accept = ${PORT}", "is not a literal"),
    ("accept = 443\x0bexec = /bin/sh", "control character"),
])
def test_stunnel_options_that_reach_outside_are_refused(line, why):
    assert_refused(Scan("stunnel", "[s]\naccept = 192.0.2.9:443\n%s\n" % line, OWN), why)


# Found by the adversarial review of the scan above (issue 18): each passed it.
@pytest.mark.parametrize("config, why", [
    # Health checks and server options connect to sockets too, as root.
    ("backend b\n    option tcp-check\n    tcp-check connect addr unix@/run/systemd/private\n",
     "a socket to connect to"),
    ("backend b\n    http-check connect addr unix@/tmp/x.sock\n", "a socket to connect to"),
    ("backend b\n    tcp-check connect addr abns@foo\n", "abstract sockets are not allowed"),
    ("backend b\n    tcp-check connect addr unix@master.sock\n", "a socket to connect to"),
    ("backend b\n    server s 192.0.2.1:80 check addr unix@/tmp/x.sock\n",
     "a socket to connect to"),
    ("backend b\n    server s 192.0.2.1:80 check addr /tmp/x.sock\n",
     "a socket to connect to"),
    ("backend b\n    server s 192.0.2.1:80 socks4 unix@/tmp/x.sock\n",
     "a socket to connect to"),
    ("backend b\n    server s 192.0.2.1:80 source uxst@/tmp/x.sock\n",
     "a socket to connect to"),
    # A runtime API on TCP adds servers to any socket, shows maps, swaps certificates.
    ("global\n    stats socket 127.0.0.1:19999 level admin expose-fd listeners\n",
     "must be `level user`"),
    ("global\n    stats socket ipv4@127.0.0.1:19999\n", "must be `level user`"),
    ("global\n    stats socket 127.0.0.1:19999 level operator\n", "must be `level user`"),
    # A log-forward's dgram-bind makes sockets like a bind.
    ("log-forward lf\n    dgram-bind unix@/tmp/victim\n", "outside this instance's folder"),
    ("log-forward lf\n    dgram-bind unix@haproxy.cfg\n", "the API's own file"),
    ("log-forward lf\n    dgram-bind unix@custom503.http\n", "a file the API keeps"),
    ("log-forward lf\n    dgram-bind /etc/passwd\n", "outside this instance's folder"),
    ("log-forward lf\n    dgram-bind localhost:514\n", "is not a literal address"),
    # Quotes in a converter's arguments, which haproxy's argument parser reads.
    ("frontend f\n    http-request set-var(txn.x) \"src,map('/etc/shadow')\"\n",
     "a quoted or escaped file name"),
    ("frontend f\n    http-request set-var(txn.y) req.hdr(x),map(\\\"/etc/passwd\\\",nope)\n",
     "a quoted or escaped file name"),
])
def test_what_the_review_found(config, why):
    assert_refused(Scan("haproxy", config, OWN), why)


@pytest.mark.parametrize("config", [
    "global\n    stats socket 127.0.0.1:19999 level user\n",
    "global\n    stats socket unix@%s/admin.sock level admin\n" % OWN,
    "log-forward lf\n    dgram-bind 127.0.0.1:1514\n    dgram-bind udp@[::1]:1514\n"
    "    log 127.0.0.1:514 local0\n",
    "backend b\n    server s 192.0.2.1:80 check addr 192.0.2.2 port 8080\n",
])
def test_what_the_review_found_is_still_fine_done_right(config):
    Scan("haproxy", config, OWN).check(STATE)


def test_a_stunnel_line_stunnel_would_split_is_refused():
    hidden = "; a comment " + "x" * 16371 + "exec = /bin/sh" + " " * 16369
    scan = Scan("stunnel", "[s]\naccept = 192.0.2.9:443\n%s\nexecArgs = sh\n" % hidden, OWN)
    assert_refused(scan, "stunnel would read it as several lines")


@pytest.mark.parametrize("service, text", [
    ("stunnel", "\ufeffinclude = /tmp/x\n"),
    ("stunnel", "[s]\naccept = 443\n\ufeffexec = /bin/sh\n"),
    ("haproxy", "\ufeffglobal\n"),
])
def test_a_byte_order_mark_is_refused(service, text):
    assert_refused(Scan(service, text, OWN), "byte-order mark")


# The second review (issue 18): each passed the scan and the confined check.
@pytest.mark.parametrize("config, why", [
    # stream+ and dgram+ stand before any address family.
    ("backend m\n    server m stream+unix@master.sock\n", "a socket to connect to"),
    ("backend a\n    server s stream+unix@/tmp/victim.sock\n", "a socket to connect to"),
    ("backend b\n    server s stream+abns@victim\n", "abstract sockets are not allowed"),
    ("global\n    log dgram+unix@/tmp/victim.dgram local0\n", "a socket to connect to"),
    ("backend b\n    tcp-check connect addr stream+unix@/tmp/v.sock\n", "a socket to connect to"),
    ("backend b\n    server s dgram+fd@3\n", "descriptors and abstract sockets"),
    ("backend c\n    dispatch /tmp/victim.sock\n", "a socket to connect to"),
    # A tenant's own admin socket relayed to the network, by haproxy or stunnel.
    ("global\n    stats socket %s/admin.sock level admin\nbackend cli\n"
     "    server s unix@%s/admin.sock\n" % (OWN, OWN), "a socket to connect to"),
    ("backend cli\n    server s %s/admin.sock\n" % OWN, "a socket to connect to"),
    # A TCP stats socket at admin level, however the line is put.
    ("global\n    stats socket ipv4@127.0.0.1:19911 level user level admin\n",
     "must be `level user`"),
    ("global\n    stats socket unix@%s/s.sock,127.0.0.1:19912 level admin\n" % OWN,
     "on several addresses"),
    ("global\n    stats socket %s/s2.sock,127.0.0.1:19913 level admin\n" % OWN,
     "on several addresses"),
    # Files read at start that the first rules did not name.
    ("frontend a\n    http-request set-var(txn.x) req.hdr(a),jwt_verify(RS256,/tmp/secret.pem)\n",
     "outside this instance's folder"),
    ("frontend a\n    bind 127.0.0.1:1 ssl crt %s/certificates/x.pem tls-ticket-keys /tmp/t\n"
     % OWN, "outside this instance's folder"),
    ("frontend a\n    filter opentracing config %s/ot.cfg\n" % OWN, "loads code"),
    ("frontend a\n    http-request set-header X \\xc3\\xa9\n", "an escape past ASCII"),
])
def test_what_the_second_review_found(config, why):
    assert_refused(Scan("haproxy", config, OWN), why)


@pytest.mark.parametrize("config", [
    "global\n    log /dev/log local0\n",           # a link into /run under systemd: fine
    "global\n    stats socket %s/admin.sock level admin\n" % OWN,   # nothing can reach it
    "frontend a\n    http-request set-var(txn.x) req.hdr(a),jwt_verify(RS256,"
    "%s/certificates/k.pem)\n" % OWN,
    "resolvers r\n    parse-resolv-conf\n",
])
def test_what_the_second_review_found_is_fine_done_right(config):
    Scan("haproxy", config, OWN).check(STATE)
