"""Many tenants at once (issue 9): appliance-wide state under concurrency,
crashes and careless configs, through real lighttpd, haproxy, stunnel, ip
and iptables inside a network namespace with network management on.

After every scenario the machine must carry exactly what the stored configs
bind: each service IP once on the VIP interface, one IN and one OUT rule per
address, one jump each from INPUT and OUTPUT, and nothing at all once the
last instance is gone. An address the operator put on the interface is never
touched. Counts go to the proof figures; each bad one is also asserted 0.
"""
import concurrent.futures
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from support.netns import Namespace, Site, haproxy_config, host_snapshot

from . import figures

OPERATOR_ADDRESS = "192.0.2.250"  # the operator's own: never the API's to remove
SHARED_VIP = "192.0.2.99"


@pytest.fixture(scope="module")
def appliance():
    before = host_snapshot()
    namespace = Namespace("appliance-cross-%d" % os.getpid())
    namespace.run("ip", "addr", "add", OPERATOR_ADDRESS + "/32", "dev", "vip0")
    site = Site(namespace, api_settings={"limits": {"concurrent_changes": "16"},
                                         "daemons": {"start_timeout": "10",
                                                     "stop_timeout": "3"}})
    try:
        yield namespace, site
    finally:
        site.delete_instances()
        site.close()
        namespace.close()
    assert host_snapshot() == before


def stored_service_ips(site):
    """What the stored configs bind, read back through the API (the tests'
    configs bind literal addresses only)."""
    found = set()
    status, listing = site("GET", "/instances")
    assert status == 200
    for instance in listing.split():
        for service, pattern in (("haproxy", r"^\s*bind (\S+):\d+"),
                                 ("stunnel", r"^\s*accept\s*=\s*(\S+):\d+")):
            status, template = site("GET", "/instances/%s/%s" % (instance, service))
            if status == 200:
                for address in re.findall(pattern, template, re.M):
                    address = address.strip("[]")
                    if not address.startswith("127.") and address not in ("", "*", "::1"):
                        found.add(address)
    return found


def problems_with_network(namespace, expected):
    """What differs between the machine and expected (service IPs); counted."""
    problems = []
    present = namespace.addresses()
    leaked = present - expected - {OPERATOR_ADDRESS}
    missing = expected - present
    if OPERATOR_ADDRESS not in present:
        problems.append("the operator's address was removed")
    figures.add("leaked_addresses", len(leaked))
    problems += ["leaked address %s" % a for a in sorted(leaked)]
    problems += ["missing address %s" % a for a in sorted(missing)]
    bad_rules = 0
    for program, version in (("iptables-save", 4), ("ip6tables-save", 6)):
        wanted = {a for a in expected if (":" in a) == (version == 6)}
        rules, hooks = namespace.accounting(program)
        for chain in ("APPLIANCE-VIP-IN", "APPLIANCE-VIP-OUT"):
            have = {a for (c, a) in rules if c == chain}
            for address in sorted(have - wanted):
                bad_rules += 1
                problems.append("%s: leaked rule for %s in %s" % (program, address, chain))
            for address in sorted(wanted - have):
                problems.append("%s: no rule for %s in %s" % (program, address, chain))
        for (chain, address), counts in rules.items():
            if len(counts) > 1:
                bad_rules += len(counts) - 1
                problems.append("%s: %d rules for %s in %s" % (program, len(counts), address,
                                                               chain))
        wanted_hooks = [("INPUT", "APPLIANCE-VIP-IN"), ("OUTPUT", "APPLIANCE-VIP-OUT")] \
            if wanted else []
        if hooks != wanted_hooks:
            bad_rules += abs(len(hooks) - len(wanted_hooks))
            problems.append("%s: jumps %r, wanted %r" % (program, hooks, wanted_hooks))
        if not wanted and namespace.chains(program):
            bad_rules += 1
            problems.append("%s: chains left: %r" % (program, namespace.chains(program)))
    figures.add("leaked_rules", bad_rules)
    return problems


def assert_converged(namespace, site, expected=None):
    expected = stored_service_ips(site) if expected is None else expected
    problems = problems_with_network(namespace, expected)
    assert not problems, problems


def at_once(*jobs):
    """Run callables at the same moment; their results in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return [future.result() for future in [pool.submit(job) for job in jobs]]


def count_500s(*replies):
    errors = [reply for reply in replies if reply[0] == 500]
    figures.add("server_errors", len(errors))
    assert not errors, errors


def test_delete_racing_a_put_that_shares_its_vip(appliance):
    """Defect 1: A binds 30 VIPs plus the shared one; DELETE A and, 0-0.45 s
    later, PUT B on the shared VIP. B's VIP, rules and traffic must survive."""
    namespace, site = appliance
    for attempt in range(figures.scaled(10, 40)):
        offset = (attempt % 10) * 0.05
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        binds = ["192.0.2.%d:8001" % (100 + n) for n in range(30)] + [SHARED_VIP + ":8001"]
        assert site("PUT", "/instances/%s/haproxy" % first, haproxy_config(*binds))[0] == 201

        def put_second():
            time.sleep(offset)
            return site("PUT", "/instances/%s/haproxy" % second,
                        haproxy_config(SHARED_VIP + ":8002"))
        deleted, put = at_once(lambda: site("DELETE", "/instances/" + first), put_second)
        figures.add("cross_instance_races")
        count_500s(deleted, put)
        assert deleted[0] == 200, deleted
        assert put[0] == 201, (offset, put)
        assert namespace.fetch("http://%s:8002/" % SHARED_VIP) == "vip-ok", offset
        assert_converged(namespace, site, {SHARED_VIP})
        assert site("DELETE", "/instances/" + second)[0] == 200
        assert_converged(namespace, site, set())


def test_two_new_instances_claiming_one_port_at_once(appliance):
    """Defect 2: two first PUTs on the same address:port at the same moment:
    exactly one wins, the other is 409 Address already in use."""
    namespace, site = appliance
    for attempt in range(figures.scaled(10, 40)):
        address = ("127.0.0.1:%d" if attempt % 2 else "192.0.2.98:%d") % (9100 + attempt)
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        replies = at_once(*(lambda i=i: site("PUT", "/instances/%s/haproxy" % i,
                                             haproxy_config(address))
                            for i in (first, second)))
        figures.add("cross_instance_races")
        count_500s(*replies)
        assert sorted(r[0] for r in replies) == [201, 409], replies
        assert [r for r in replies if r[0] == 409][0][1].startswith("Address already in use\n")
        assert_converged(namespace, site)
        for instance in (first, second):
            site("DELETE", "/instances/" + instance)
    assert_converged(namespace, site, set())


@pytest.mark.parametrize("bind", ['localhost:9201', '"127.0.0.1:9202"', "'192.0.2.97:9203'",
                                  '"192.0.2.97":9206', "${HOSTNAME}:9204", "127.0.0.1\\:9205"])
def test_listener_spellings_the_api_cannot_be_sure_of_are_refused(appliance, bind):
    """Defect 2: haproxy accepts these (or refuses them itself); the API
    cannot account for them, so refuses them, naming the line, and changes
    nothing."""
    namespace, site = appliance
    instance = str(uuid.uuid4())
    status, body = site("PUT", "/instances/%s/haproxy" % instance, haproxy_config(bind))
    assert status == 409, body
    if "[ALERT]" not in body:  # haproxy took it: the API must say why not
        assert body.startswith("Invalid configuration\nline 10: bind %s: " % bind), body
    else:
        assert bind.startswith(("${", "127.0.0.1\\")), body
    assert site("GET", "/instances/" + instance)[0] == 404
    assert_converged(namespace, site)


def test_killed_requests_are_repaired_by_the_next_change(appliance):
    """Defect 3: kill -9 the CGI at random points of PUTs and DELETEs; then one
    ordinary change: addresses and rules are exactly the desired set. And
    once the last instance is gone: no address, rule, jump or chain."""
    namespace, site = appliance
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    live = []
    witness = str(uuid.uuid4())
    for trial in range(figures.scaled(30, 120)):
        if live and rng.random() < 0.4:
            instance = rng.choice(live)
            argv = site.curl_argv("DELETE", "/instances/" + instance)
            data = None
        else:
            instance = str(uuid.uuid4())
            live.append(instance)
            vips = ["192.0.2.%d:%d" % (rng.randrange(60, 70), 8300 + trial),
                    "[2001:db8::%x]:%d" % (rng.randrange(0x60, 0x64), 8300 + trial)]
            argv = site.curl_argv("PUT", "/instances/%s/haproxy" % instance)
            data = haproxy_config(*vips)
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, text=True)
        if data is not None:
            client.stdin.write(data)
        client.stdin.close()
        time.sleep(rng.uniform(0.0, 0.4))
        for cgi in site.cgi_processes():
            try:
                os.kill(cgi.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        client.wait(timeout=60)
        figures.add("crash_trials")
        # One ordinary change, by another instance.
        status, body = site("PUT", "/instances/%s/haproxy" % witness,
                            haproxy_config("192.0.2.%d:%d" % (80 + trial % 3, 8500 + trial)))
        count_500s((status, body))
        assert status == 201, (seed, trial, body)
        problems = problems_with_network(namespace, stored_service_ips(site))
        assert not problems, (seed, trial, problems)
        live = [i for i in live if site("GET", "/instances/" + i)[0] == 200]
    for instance in live + [witness]:
        assert site("DELETE", "/instances/" + instance)[0] in (200, 404)
    assert_converged(namespace, site, set())


def test_first_puts_racing_on_an_appliance_with_no_chains(appliance):
    """Defect 4: concurrent first PUTs create the chains once, jump to them
    once, and give a VIP two instances add at once one rule per chain."""
    namespace, site = appliance
    for attempt in range(figures.scaled(10, 30)):
        assert namespace.chains() == [] and namespace.chains("ip6tables-save") == []
        instances = [str(uuid.uuid4()) for _ in range(6)]
        configs = [haproxy_config("192.0.2.77:%d" % (8601 + attempt * 10)),
                   haproxy_config("192.0.2.77:%d" % (8602 + attempt * 10)),
                   haproxy_config("[2001:db8::77]:%d" % (8603 + attempt * 10))] + \
            [haproxy_config("192.0.2.%d:%d" % (40 + n, 8604 + attempt * 10 + n))
             for n in range(3)]
        replies = at_once(*(lambda i=i, c=c: site("PUT", "/instances/%s/haproxy" % i, c)
                            for i, c in zip(instances, configs)))
        figures.add("cross_instance_races")
        count_500s(*replies)
        assert [r[0] for r in replies] == [201] * 6, replies
        assert_converged(namespace, site)
        replies = at_once(*(lambda i=i: site("DELETE", "/instances/" + i) for i in instances))
        count_500s(*replies)
        assert [r[0] for r in replies] == [200] * 6, replies
        assert_converged(namespace, site, set())


def test_a_config_may_not_name_another_instances_files(appliance):
    """Defect 5: a stats socket on another instance's pid file is refused;
    and a pid file replaced anyway (by hand) makes /status and
    /service_status say "not running", not 500, and DELETE still stops the
    daemon behind it (no orphan)."""
    namespace, site = appliance
    victim, careless = str(uuid.uuid4()), str(uuid.uuid4())
    assert site("PUT", "/instances/%s/haproxy" % victim,
                haproxy_config("192.0.2.51:8701"))[0] == 201
    victim_dir = os.path.join(site.instances_dir, victim)
    for target in ("%s/haproxy.pid" % victim_dir, "{INSTANCE_DIR}/../%s/lock" % victim,
                   "{INSTANCE_DIR}/haproxy.pid", "%s/owned-addresses.json" % site.state_dir):
        status, body = site("PUT", "/instances/%s/haproxy" % careless, haproxy_config(
            "192.0.2.52:8702", extra_global="    stats socket %s mode 600" % target))
        assert status == 409, body
        if "too long (max" not in body:  # haproxy's own limit on a socket path, or ours:
            assert re.match(r"Invalid configuration\nline 4: .* (is outside this instance's "
                            r"folder|is the API's own file)", body), body
    assert site("GET", "/instances/" + careless)[0] == 404

    pid_file = os.path.join(victim_dir, "haproxy.pid")
    with open(pid_file) as file:
        master = int(file.read())
    os.unlink(pid_file)
    squatter = socket.socket(socket.AF_UNIX)
    squatter.bind(pid_file)
    try:
        for path in ("/status", "/service_status"):
            status, body = site("GET", path)
            assert status == 200, body
        assert "%-52s%s" % (victim, "DOWN") in site("GET", "/service_status")[1]
        status, body = site("DELETE", "/instances/" + victim)
        assert status == 200, body
        assert "haproxy daemon %s killed." % victim in body
    finally:
        squatter.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(master):
        time.sleep(0.05)
    figures.add("orphan_daemons", int(_alive(master)))
    assert not _alive(master)
    assert_converged(namespace, site, set())


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_failed_reload_is_reported_whatever_end_users_log(appliance):
    """Defect 6: with `log stdout` and a captured User-Agent, end users write
    "Loading success." into the daemon's output. A v2 that cannot bind must
    still be a 409, with v1 serving."""
    namespace, site = appliance
    instance = str(uuid.uuid4())
    logging = dict(extra_global="    log stdout format raw daemon",
                   extra_frontend="    log global\n    option httplog\n"
                                  "    http-request capture req.hdr(User-Agent) len 64")
    assert site("PUT", "/instances/%s/haproxy" % instance,
                haproxy_config("192.0.2.53:8801", **logging))[0] == 201
    holder = subprocess.Popen(list(namespace.prefix) + [
        sys.executable, "-c", "import socket, time; s = socket.socket(); "
        "s.bind(('192.0.2.53', 8802)); s.listen(); time.sleep(60)"])
    stop = threading.Event()

    def end_users():
        while not stop.is_set():
            namespace.run("curl", "-s", "--max-time", "2", "-A", "Loading success.",
                          "http://192.0.2.53:8801/", check=False)
    users = threading.Thread(target=end_users, daemon=True)
    users.start()
    try:
        time.sleep(0.5)
        for _try in range(3):
            status, body = site("PUT", "/instances/%s/haproxy" % instance, haproxy_config(
                "192.0.2.53:8801", "192.0.2.53:8802", **logging))
            assert status == 409, body
            assert "haproxy failed to reload" in body
            assert namespace.fetch("http://192.0.2.53:8801/") == "vip-ok"
            figures.add("cross_instance_races")
    finally:
        stop.set()
        users.join(10)
        holder.kill()
        holder.wait()
    with open(os.path.join(site.instances_dir, instance, "haproxy.log"), "rb") as log:
        assert b"Loading success." in log.read()  # the users did write it there
    assert site("DELETE", "/instances/" + instance)[0] == 200


def _certificate(cn="www.example.com"):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    import pki as pki_tool
    from cryptography.hazmat.primitives import serialization

    ca_cert, ca_key = pki_tool.make_ca("tenant CA")
    cert, key = pki_tool.make_leaf(ca_cert, ca_key, cn, server=True)
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + \
        cert.public_bytes(serialization.Encoding.PEM)).decode()


def test_stunnel_log_overwrite_does_not_break_later_changes(appliance):
    """Defect 7: `log = overwrite` used to truncate the log the API reads
    verdicts from: every later certificate change waited 20 s, then 500."""
    namespace, site = appliance
    instance = str(uuid.uuid4())
    base = "/instances/" + instance
    assert site("PUT", base + "/certificates/www.example.com.pem", _certificate())[0] == 201
    status, body = site("PUT", base + "/stunnel", "log = overwrite\n[tls]\naccept = "
                        "192.0.2.54:8443\nconnect = 127.0.0.1:9\n"
                        "cert = {INSTANCE_DIR}/certificates/www.example.com.pem\n")
    assert status == 201, body
    for _change in range(2):
        # Many connections make the log long: `overwrite` then empties it at
        # the reload, below where the API started reading.
        for _connection in range(40):
            namespace.run(sys.executable, "-c", "import socket; socket.create_connection("
                          "('192.0.2.54', 8443), 2).close()", check=False)
        log = os.path.join(site.instances_dir, instance, "stunnel.log")
        size_before = os.path.getsize(log)
        started = time.monotonic()
        status, body = site("PUT", base + "/certificates/www.example.com.pem", _certificate())
        assert status == 201, body
        assert "stunnel daemon for %s reloaded" % instance in body
        assert time.monotonic() - started < 5
        assert os.path.getsize(log) > size_before  # appended to, never emptied
    assert site("DELETE", base)[0] == 200


@pytest.mark.parametrize("spelling", [
    "crt-base",            # crt-base {INSTANCE_DIR}/certificates + crt www.example.com.pem
    "folder",              # crt {INSTANCE_DIR}/certificates
    "double slash",        # crt {INSTANCE_DIR}//certificates//www.example.com.pem
])
def test_a_certificate_in_use_under_any_spelling_cannot_be_deleted(appliance, spelling):
    """Defect 8: "in use" was a substring match; now it follows haproxy's own
    path rules, and the config stays valid and re-uploadable."""
    namespace, site = appliance
    instance = str(uuid.uuid4())
    base = "/instances/" + instance
    assert site("PUT", base + "/certificates/www.example.com.pem", _certificate())[0] == 201
    crt, extra_global = {
        "crt-base": ("www.example.com.pem", "    crt-base {INSTANCE_DIR}/certificates"),
        "folder": ("{INSTANCE_DIR}/certificates", ""),
        "double slash": ("{INSTANCE_DIR}//certificates//www.example.com.pem", ""),
    }[spelling]
    config = haproxy_config("192.0.2.55:8443 ssl crt %s" % crt, extra_global=extra_global)
    status, body = site("PUT", base + "/haproxy", config)
    assert status == 201, body
    status, body = site("DELETE", base + "/certificates/www.example.com.pem")
    assert (status, body) == (409, "Certificate is in use by the haproxy configuration\n")
    status, body = site("PUT", base + "/haproxy", config)
    assert status == 201, body
    assert site("DELETE", base)[0] == 200
