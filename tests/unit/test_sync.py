"""The standby's sync (`octctl sync`) against a stand-in active node
(tests/support/fake_peer.py: TLS, answers chosen per test), in process: the
peer is 127.0.0.2, this node 127.0.0.1, the stored topology ACTIVE-STANDBY
with ha_ip on no interface (this node is the standby). What the peer may not
make this node do: delete much or all of it, hold it with a huge or trickled
manifest, crash it with a malformed one."""
import contextlib
import hashlib
import io
import json
import os
import sys
import time
import uuid

import pytest

import pki as pki_tool  # tools/pki.py (conftest puts tools/ on sys.path)
from appliance_api import cli, manifest, sync
from appliance_api import config as config_module

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from support.fake_peer import (Answer, FakePeer, huge_manifest,  # noqa: E402 (tests/support)
                               manifest as peer_manifest, trickled)

PEER, HA_IP = "127.0.0.2", "192.0.2.100"
PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry %d\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("pki"))
    pki_tool.generate(folder, server_addresses=[PEER])
    return folder


@pytest.fixture
def peer(pki):
    server = FakePeer(os.path.join(pki, "server.pem"), PEER).start()
    yield server
    server.stop()


@pytest.fixture
def standby(state_dir, pki, peer, tmp_path):
    """(config file path, Config) of a standby whose peer is the FakePeer."""
    sections = {
        "paths": {"state_dir": state_dir},
        "network": {"manage": "no", "vip_interface": "lo"},
        "status": {"network_interfaces": "all"},
        "sync": {"ca_file": os.path.join(pki, "ca.pem"),
                 "client_certificate": os.path.join(pki, "client.pem"),
                 "port": str(peer.port), "timeout": "2"},
    }
    path = str(tmp_path / "appliance-api.ini")
    write_config(path, sections)
    with open(os.path.join(state_dir, "topology.json"), "w") as file:
        json.dump({"topology": "ACTIVE-STANDBY", "role": "SECONDARY", "ha_ip": HA_IP,
                   "primary_ip": PEER, "all_ips": [PEER, "127.0.0.1"],
                   "routing-mode": "LAYER2", "secret": "syncsecr"}, file)
    return type("Standby", (), {"path": path, "sections": sections,
                                "config": config_module.load({"APPLIANCE_API_CONFIG": path})})


def write_config(path, sections):
    with open(path, "w") as file:
        for name, values in sections.items():
            file.write("[%s]\n" % name + "".join("%s = %s\n" % kv for kv in values.items()))


def reconfigure(standby, **sync_keys):
    standby.sections["sync"].update(sync_keys)
    write_config(standby.path, standby.sections)
    standby.config = config_module.load({"APPLIANCE_API_CONFIG": standby.path})


def octctl_sync(standby, *options):
    """(exit status, stdout lines, stderr) of `octctl sync`, in process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--config", standby.path, "sync", *options])
    return code, out.getvalue().splitlines(), err.getvalue()


def holding(app, count):
    """count instances on this node, each a 503 page; their manifest entries."""
    entries = {}
    for number in range(count):
        instance = str(uuid.uuid4())
        app.put("/instances/%s/custom503" % instance, PAGE % number)
        entries[instance] = {"custom503": hashlib.sha256(PAGE % number).hexdigest()}
    return entries


def held(standby):
    return manifest.build(standby.config)["instances"]


@pytest.fixture
def app(standby):
    import webtest
    from appliance_api.app import make_application

    from conftest import VERIFIED

    return webtest.TestApp(make_application(standby.config), extra_environ=VERIFIED)


def shown(standby):
    from appliance_api.sync_state import status_keys

    return status_keys(standby.config.state_dir)


# --- what a peer's manifest may take away ------------------------------------------------------

def test_in_step_is_one_request_and_no_refusal(standby, app, peer):
    entries = holding(app, 3)
    peer.routes["/manifest"] = peer_manifest(entries)
    code, lines, _ = octctl_sync(standby)
    assert (code, lines) == (0, ["synced from %s: 3 of 3 instances in step, 0 changed, "
                                 "0 failing, 1 requests" % PEER])
    assert (shown(standby)["sync_error"], shown(standby)["sync_refused"]) == ("", "")


def test_an_empty_manifest_deletes_nothing_until_confirmed(standby, app, peer):
    entries = holding(app, 5)
    peer.routes["/manifest"] = peer_manifest({})
    code, lines, err = octctl_sync(standby)
    assert code == 1 and err == ""
    assert lines == ["not synced: the manifest of %s lists no instance while this node holds "
                     "5: nothing changed; `octctl sync --allow-mass-delete` confirms" % PEER]
    assert held(standby) == entries
    keys = shown(standby)
    assert keys["sync_refused"] == keys["sync_error"] == lines[0][len("not synced: "):]
    assert keys["sync_last_success"] is None and keys["sync_unreachable_since"] is None
    assert peer.seen == ["/manifest"]
    # Refused again at the next run: the refusal holds until confirmed.
    assert octctl_sync(standby)[0] == 1 and held(standby) == entries

    code, lines, _ = octctl_sync(standby, "--allow-mass-delete")
    assert code == 0, lines
    assert lines[0].startswith("synced from %s: 0 of 0 instances in step, 5 changed" % PEER)
    assert "(mass delete confirmed: lists no instance while this node holds 5)" in lines[0]
    assert held(standby) == {}
    assert (shown(standby)["sync_error"], shown(standby)["sync_refused"]) == ("", "")
    # The confirmation was for that run only: nothing is left to refuse now.
    assert octctl_sync(standby)[0] == 0


def test_deletions_over_the_share_are_refused_and_within_it_done(standby, app, peer):
    entries = holding(app, 8)
    names = sorted(entries)
    peer.routes["/manifest"] = peer_manifest({n: entries[n] for n in names[3:]})  # 3 of 8
    code, lines, _ = octctl_sync(standby)
    assert code == 1
    assert "would take away 3 of this node's 8 instances (over [sync] max_delete_share " \
        "0.25): nothing changed" in lines[0], lines
    assert held(standby) == entries
    peer.routes["/manifest"] = peer_manifest({n: entries[n] for n in names[2:]})  # 2 of 8
    code, lines, _ = octctl_sync(standby)
    assert code == 0, lines
    assert set(held(standby)) == set(names[2:])
    assert shown(standby)["sync_refused"] == ""


def test_the_share_is_a_setting(standby, app, peer):
    entries = holding(app, 4)
    names = sorted(entries)
    reconfigure(standby, max_delete_share="0.5")
    peer.routes["/manifest"] = peer_manifest({n: entries[n] for n in names[2:]})
    assert octctl_sync(standby)[0] == 0
    assert set(held(standby)) == set(names[2:])


def test_a_share_outside_0_to_1_is_refused_at_load(standby):
    standby.sections["sync"]["max_delete_share"] = "1.5"
    write_config(standby.path, standby.sections)
    code, lines, err = octctl_sync(standby)
    assert (code, lines) == (2, [])
    assert "max_delete_share: 1.5 is not between 0 and 1" in err


def test_one_instance_may_always_go_but_not_the_last(standby, app, peer):
    entries = holding(app, 2)
    kept, gone = sorted(entries)
    peer.routes["/manifest"] = peer_manifest({kept: entries[kept]})  # 1 of 2: half, and one
    assert octctl_sync(standby)[0] == 0
    assert set(held(standby)) == {kept}
    peer.routes["/manifest"] = peer_manifest({})  # the last one: an empty manifest
    code, lines, _ = octctl_sync(standby)
    assert code == 1 and "lists no instance while this node holds 1" in lines[0]
    assert set(held(standby)) == {kept}


DIGEST = "0" * 64


@pytest.mark.parametrize("have, wanted, share, refused", [
    ({}, {}, 0.25, None),
    ({"a": {"custom503": DIGEST}}, {}, 0.25, "lists no instance while this node holds 1"),
    ({"a": {"custom503": DIGEST}}, {}, 1.0, "lists no instance while this node holds 1"),
    # Changes and new instances take nothing away.
    ({"a": {"haproxy": DIGEST}}, {"a": {"haproxy": "1" * 64}, "b": {"stunnel": DIGEST}},
     0.0, None),
    # An instance left without any config counts as taken away...
    ({"a": {"haproxy": DIGEST}, "b": {"haproxy": DIGEST}, "c": {"haproxy": DIGEST}},
     {"a": {"custom503": DIGEST}, "b": {"certificates": {"x.pem": DIGEST}},
      "c": {"haproxy": DIGEST}}, 0.25,
     "would take away 2 of this node's 3 instances (over [sync] max_delete_share 0.25)"),
    # ... one that loses one of two configs does not.
    ({"a": {"haproxy": DIGEST, "stunnel": DIGEST}, "b": {"haproxy": DIGEST}},
     {"a": {"haproxy": DIGEST}, "b": {"haproxy": DIGEST}}, 0.0, None),
    ({str(n): {"custom503": DIGEST} for n in range(100)},
     {str(n): {"custom503": DIGEST} for n in range(75)}, 0.25, None),
    ({str(n): {"custom503": DIGEST} for n in range(100)},
     {str(n): {"custom503": DIGEST} for n in range(74)}, 0.25,
     "would take away 26 of this node's 100 instances (over [sync] max_delete_share 0.25)"),
    ({str(n): {"custom503": DIGEST} for n in range(3)}, {"0": {"custom503": DIGEST}}, 0.25,
     "would take away 2 of this node's 3 instances (over [sync] max_delete_share 0.25)"),
])
def test_mass_delete_judges_what_a_run_takes_away(have, wanted, share, refused):
    assert sync.mass_delete(have, wanted, share) == refused


# --- a manifest too big to hold -------------------------------------------------------------------

@pytest.mark.parametrize("announced", [True, False])
def test_a_manifest_over_the_bound_is_refused_unread(standby, app, peer, announced):
    entries = holding(app, 2)
    reconfigure(standby, max_manifest_bytes=str(1 << 20))
    sent = huge_manifest(64)  # 64 MiB, made as it is sent
    if not announced:  # no Content-Length: the bound is found while reading
        sent.length = None
    peer.routes["/manifest"] = sent
    code, lines, _ = octctl_sync(standby)
    assert code == 1
    assert lines == ["not synced: the manifest of %s is refused: GET /manifest: the answer is "
                     "over 1048576 bytes: refused unread" % PEER]
    assert held(standby) == entries
    assert shown(standby)["sync_refused"] == lines[0][len("not synced: "):]


def test_the_default_bound_is_16_mib(standby):
    assert standby.config.number("sync", "max_manifest_bytes") == 16 << 20


def test_a_file_over_its_limit_fails_that_instance_only(standby, app, peer):
    big, fine = str(uuid.uuid4()), str(uuid.uuid4())
    reconfigure(standby)
    pages = {big: b"x" * 20000, fine: PAGE % 1}  # [limits] custom503_bytes is 16 KiB
    peer.routes["/manifest"] = peer_manifest({
        instance: {"custom503": hashlib.sha256(page).hexdigest()}
        for instance, page in pages.items()})
    for instance, page in pages.items():
        peer.routes["/instances/%s/custom503" % instance] = page
    code, lines, _ = octctl_sync(standby)
    assert code == 1
    failing = shown(standby)["sync_failing"]
    assert failing == {big: "the active node: GET /instances/%s/custom503: the answer is over "
                            "16384 bytes: refused unread" % big}
    assert set(held(standby)) == {fine}


# --- a peer that trickles -------------------------------------------------------------------------

def test_a_trickled_manifest_ends_the_run_at_the_requests_deadline(standby, app, peer):
    entries = holding(app, 1)
    peer.routes["/manifest"] = trickled(peer_manifest(entries) + b" " * 200, 0.5)
    started = time.monotonic()
    code, lines, _ = octctl_sync(standby)
    took = time.monotonic() - started
    assert code == 1
    assert lines == ["not synced: active node %s unreachable: GET /manifest: no whole answer "
                     "within 2 s (this node's configuration is left as it is)" % PEER]
    assert took < 10, took  # per read, a byte every 0.5 s would go on for 100 s
    assert shown(standby)["sync_error"].endswith("no whole answer within 2 s")
    assert held(standby) == entries


def test_a_trickled_file_stops_the_run_with_an_error(standby, app, peer):
    first, second = sorted(str(uuid.uuid4()) for _ in range(2))
    pages = {first: PAGE % 1, second: PAGE % 2}
    peer.routes["/manifest"] = peer_manifest({
        instance: {"custom503": hashlib.sha256(page).hexdigest()}
        for instance, page in pages.items()})
    peer.routes["/instances/%s/custom503" % first] = trickled(pages[first], 0.5)
    peer.routes["/instances/%s/custom503" % second] = pages[second]
    started = time.monotonic()
    code, lines, _ = octctl_sync(standby)
    assert time.monotonic() - started < 10
    assert code == 1
    assert lines[0].startswith("stopped syncing from %s: 0 of 2 instances in step" % PEER)
    keys = shown(standby)
    assert keys["sync_failing"] == {
        first: "the active node: GET /instances/%s/custom503: no whole answer within 2 s" % first,
        second: "not reached: the run stopped when the active node timed out"}
    assert keys["sync_error"] == "the active node %s timed out (%s): the run stopped" % (
        PEER, keys["sync_failing"][first])
    assert keys["sync_last_success"] is None
    assert held(standby) == {}
    # The peer answers in time again: the next run does it all.
    peer.routes["/instances/%s/custom503" % first] = pages[first]
    assert octctl_sync(standby)[0] == 0
    assert set(held(standby)) == {first, second}
    assert shown(standby)["sync_error"] == ""


# --- malformed manifests ------------------------------------------------------------------------

INSTANCE = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"
MALFORMED = [
    (b"[]", "not a JSON object"),
    (b'"manifest"', "not a JSON object"),
    (b"{", "Expecting property name enclosed in double quotes"),
    (b'{"active_node": "\xc3\x28"}', "codec can't decode byte"),
    (b"\xff\xfe{}", "Expecting value"),
    (b"[" * 100000 + b"]" * 100000, "maximum recursion depth exceeded"),
    (b'{"instances": {}}', "active_node: not 0 or 1"),
    (b'{"active_node": true, "instances": {}}', "active_node: not 0 or 1"),
    (b'{"active_node": 1, "instances": []}', "instances: not an object"),
    (b'{"active_node": 1}', "instances: not an object"),
    (b'{"active_node": 1, "instances": {"../x": {"custom503": "%s"}}}' % DIGEST.encode(),
     "instances: '../x' is not an instance id"),
    (b'{"active_node": 1, "instances": {"%s": []}}' % INSTANCE.encode(),
     "instances[%s]: not an object of files" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {}}}' % INSTANCE.encode(),
     "instances[%s]: not an object of files" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"haproxy": 1}}}' % INSTANCE.encode(),
     "instances[%s].haproxy: not a SHA-256 hex digest" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"haproxy": "abc"}}}' % INSTANCE.encode(),
     "instances[%s].haproxy: not a SHA-256 hex digest" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"certificates": "x"}}}' % INSTANCE.encode(),
     "instances[%s].certificates: not an object of certificates" % INSTANCE),
    (('{"active_node": 1, "instances": {"%s": {"certificates": {"\u00e9t\u00e9.pem": "%s"}}}}'
      % (INSTANCE, DIGEST)).encode(),
     "instances[%s].certificates: '\\xe9t\\xe9.pem' is not a certificate name" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"certificates": {"a/../b.pem": "%s"}}}}'
     % (INSTANCE.encode(), DIGEST.encode()),
     "instances[%s].certificates: 'a/../b.pem' is not a certificate name" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"certificates": {"a.pem": null}}}}'
     % INSTANCE.encode(),
     "instances[%s].certificates[a.pem]: not a SHA-256 hex digest" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"crt-lists": {".x": "%s"}}}}'
     % (INSTANCE.encode(), DIGEST.encode()),
     "instances[%s].crt-lists: '.x' is not a crt-list name" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"crt-lists": {}}}}' % INSTANCE.encode(),
     "instances[%s].crt-lists: not an object of crt-lists" % INSTANCE),
    (b'{"active_node": 1, "instances": {"%s": {"lua": "%s"}}}' % (INSTANCE.encode(),
                                                                 DIGEST.encode()),
     "instances[%s]: unexpected key 'lua'" % INSTANCE),
]


@pytest.mark.parametrize("body, reason", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_manifest_is_one_recorded_line_and_changes_nothing(
        standby, app, peer, body, reason):
    entries = holding(app, 2)
    peer.routes["/manifest"] = body
    code, lines, err = octctl_sync(standby)
    assert (code, err) == (1, "")
    assert len(lines) == 1 and lines[0].startswith(
        "not synced: the manifest of %s is malformed: " % PEER), lines
    assert reason in lines[0], lines
    assert held(standby) == entries
    assert shown(standby)["sync_error"] == lines[0][len("not synced: "):]


def test_an_unexpected_failure_is_recorded_in_one_line(standby, app, peer, monkeypatch):
    peer.routes["/manifest"] = peer_manifest({})
    monkeypatch.setattr(sync, "mass_delete", lambda *args: 1 / 0)
    code, lines, err = octctl_sync(standby)
    assert (code, err) == (1, "")
    assert lines == ["not synced: the sync failed: ZeroDivisionError: division by zero"]
    assert shown(standby)["sync_error"] == "the sync failed: ZeroDivisionError: division by zero"


def test_answers_other_than_a_manifest_are_unreachable_not_a_crash(standby, app, peer):
    peer.routes["/manifest"] = Answer(b"gone", status=500)
    code, lines, _ = octctl_sync(standby)
    assert code == 1
    assert lines == ["not synced: active node %s unreachable: GET /manifest answered 500 "
                     "(this node's configuration is left as it is)" % PEER]


# --- crt-lists: after the certificates they name, gone before them -----------------------

def test_a_crt_list_is_copied_after_its_certificate_and_deleted_before_it(standby, app, peer):
    from appliance_api import crtlist
    from appliance_api.layout import Instance
    from test_write_endpoints import certificate_bundle

    instance = str(uuid.uuid4())
    listed = ("%swww.example.com.pem [alpn h2] www.example.com\n" % crtlist.PLACEHOLDER).encode()
    entry = peer.holds(instance, certificates={"www.example.com.pem":
                                               certificate_bundle("www.example.com")},
                       crt_lists={"listener": listed})
    peer.routes["/manifest"] = peer_manifest({instance: entry})
    code, lines, _ = octctl_sync(standby)
    assert (code, shown(standby)["sync_failing"]) == (0, {}), lines
    assert [path.rsplit("/", 2)[1] for path in peer.seen[1:]] == ["certificates", "crt-lists"]
    assert held(standby)[instance] == entry  # the standby hashes it as uploaded
    stored = Instance(standby.config.state_dir, instance)
    with open(stored.crt_list("listener"), "rb") as file:
        assert file.read() == crtlist.render(listed, stored.dir)  # its own folder filled in
    # The active drops both: the crt-list goes first, else its certificate could not.
    peer.routes["/manifest"] = peer_manifest({instance: {"custom503": hashlib.sha256(
        PAGE % 1).hexdigest()}})
    peer.routes["/instances/%s/custom503" % instance] = PAGE % 1
    code, lines, _ = octctl_sync(standby)
    assert (code, shown(standby)["sync_failing"]) == (0, {}), lines
    assert stored.crt_list_names() == [] and stored.certificate_names() == []


def test_the_sync_orders_crt_lists_between_certificates_and_configs():
    digest = "0" * 64
    steps = sync._changes("i", {"certificates": {"a.pem": digest}, "crt-lists": {"l": digest},
                                "haproxy": digest},
                          {"certificates": {"old.pem": digest}, "crt-lists": {"old": digest}})
    assert [repr(step) for step in steps] == [
        "PUT /instances/i/certificates/a.pem", "PUT /instances/i/crt-lists/l",
        "PUT /instances/i/haproxy", "DELETE /instances/i/crt-lists/old",
        "DELETE /instances/i/certificates/old.pem"]
    assert sync.Step("PUT", "i", "crt-list", "l").limit == "crt_list"
