"""make bench-recovery: how fast the installed appliance heals, under real
systemd (the Debian 12 image of `make system-image`, booted with
systemd-nspawn as tests/system does).

- Boot to every tenant serving, at 10, 100 and 500 instances (RECOVERY_COUNTS):
  the instances are PUT through the API (4 at a time, the change cap), the
  machine is powered off and booted again, and the time runs from the start
  of systemd-nspawn until every tenant's listener answers; also from the
  start until the API answers /status. No API call is made after the boot.
- SIGKILL of a tenant's haproxy master to serving again: RECOVERY_TRIALS
  (20) kills, at the smallest count, before its reboot; median and max.
  Round-robin over the first KILL_TENANTS (10) tenants: two kills each in
  the supervisor's window, within its default burst (3), so the figure is a
  restart's and not the crash-loop back-off's. "Serving again" is an answer from a new master
  (the pid file names another live process), so the dying worker's last
  answers are not counted.
- SIGKILL of a tenant's stunnel to serving TLS again (a handshake through
  the new stunnel and an answer from haproxy behind it): the same trials.
- Memory per tenant: the RSS and PSS of its haproxy processes (master +
  worker), and of its stunnel, at the largest count, as the PUTs left them. The first
  KILL_TENANTS tenants and every STUNNEL_EVERY-th (10th by default) also
  have TLS through stunnel, with a certificate of a CA made here
  (tools/pki.py).

The probes run inside the machine (this file, copied in, run by the image's
python3), so nsenter's own start is not in the figures. A figure that cannot
be had (nothing starts the tenants) is printed as "not serving after N s",
with how many did serve.
"""
import json
import os
import signal
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = [int(n) for n in os.environ.get("RECOVERY_COUNTS", "10,100,500").split(",")]
TRIALS = int(os.environ.get("RECOVERY_TRIALS", "20"))
BOOT_DEADLINE = float(os.environ.get("RECOVERY_BOOT_DEADLINE", "300"))
KILL_DEADLINE = 10.0
STUNNEL_EVERY = int(os.environ.get("RECOVERY_STUNNEL_EVERY", "10"))
KILL_TENANTS = 10
TLS_PORT_OFFSET = 20000   # a tenant's stunnel listens on its haproxy port + this
CERTIFICATE_NAME = "tenant.example"
SERVICE_IP_SUFFIX = 20    # every tenant listens on VIP_NETWORK.20, on a port of its own
FIRST_PORT = 10000
STATE = "/var/lib/appliance-api/instances"
PROBE = "/root/bench_recovery.py"  # this file, inside the machine


# Inside the machine (standard library only).
def answers(address, port, expected, timeout=0.5):
    try:
        with socket.create_connection((address, port), timeout=timeout) as connection:
            connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while True:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.startswith(b"HTTP/1.") and reply.endswith(expected.encode())
    except OSError:
        return False


def probe_all(address, first_port, count, deadline, stunnel_every):
    """When (wall clock, the host's too: one kernel) every tenant answered,
    over TLS too when it has a stunnel, or the deadline passed; how many did."""
    waiting = {}
    for n in range(count):
        waiting[(first_port + n, False)] = instance_id(n)
        if with_stunnel(n, stunnel_every):
            waiting[(first_port + n + TLS_PORT_OFFSET, True)] = instance_id(n)
    end = time.monotonic() + deadline
    while waiting and time.monotonic() < end:
        for (port, tls), expected in list(waiting.items()):
            if (answers_tls if tls else answers)(address, port, expected, timeout=0.2):
                del waiting[(port, tls)]
        if waiting:
            time.sleep(0.05)
    return {"done_at": time.time(), "serving": count - len({n for n in waiting.values()})}


def answers_tls(address, port, expected, timeout=0.5):
    """A TLS handshake with the tenant's stunnel (no verification: the
    figure is the daemon's, not the PKI's) and haproxy's answer through it."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            with context.wrap_socket(raw) as connection:
                connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
                reply = b""
                while True:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
        return reply.startswith(b"HTTP/1.") and reply.endswith(expected.encode())
    except (OSError, ssl.SSLError):
        return False


def read_pid(path):
    try:
        with open(path) as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def kill_and_wait(address, port, instance, deadline, service="haproxy"):
    """SIGKILL the instance's haproxy master (or its stunnel); seconds until
    a new one serves (stunnel: TLS on port + TLS_PORT_OFFSET)."""
    pid_file = "%s/%s/%s.pid" % (STATE, instance, service)
    killed = read_pid(pid_file)
    if killed is None or not alive(killed):
        return {"seconds": None, "reason": "no %s running to kill (pid file: %s)"
                % (service, killed)}
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        pid = read_pid(pid_file)
        if pid not in (None, killed) and alive(pid) and (
                answers_tls(address, port + TLS_PORT_OFFSET, instance, 0.2)
                if service == "stunnel" else answers(address, port, instance, 0.2)):
            return {"seconds": time.monotonic() - started}
        time.sleep(0.005)
    return {"seconds": None, "reason": "not serving after %.0f s" % deadline}


def rss_kib():
    """The summed RSS and PSS of every haproxy and every stunnel process:
    {"rss": {name: KiB}, "pss": {name: KiB}}. RSS counts a shared page
    (haproxy's binary and libraries) in every process mapping it; PSS
    (smaps_rollup) shares it out among them."""
    totals = {"rss": {"haproxy": 0, "stunnel": 0}, "pss": {"haproxy": 0, "stunnel": 0}}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/status" % pid) as file:
                fields = dict(line.split(":", 1) for line in file if ":" in line)
            name = fields.get("Name", "").strip()
            name = "stunnel" if name == "stunnel4" else name
            if name not in totals["rss"]:
                continue
            with open("/proc/%s/smaps_rollup" % pid) as file:
                rollup = dict(line.split(":", 1) for line in file if ":" in line)
        except OSError:
            continue
        totals["rss"][name] += int(fields.get("VmRSS", "0 kB").split()[0])
        totals["pss"][name] += int(rollup.get("Pss", "0 kB").split()[0])
    return totals


def inside(argv):
    command = argv[0]
    if command == "all":
        result = probe_all(argv[1], int(argv[2]), int(argv[3]), float(argv[4]), int(argv[5]))
    elif command == "kill":
        result = kill_and_wait(argv[1], int(argv[2]), argv[3], float(argv[4]), argv[5])
    else:
        result = {"rss_kib": rss_kib()}
    print(json.dumps(result))


# On the host.
def instance_id(n):
    return "00000000-0000-4000-8000-%012d" % n


def tenant_config(address, port, answer):
    return ("global\n    maxconn 50\ndefaults\n    mode http\n    timeout connect 2s\n"
            "    timeout client 5s\n    timeout server 5s\n"
            "frontend fe\n    bind %s:%d\n"
            "    http-request return status 200 content-type text/plain string %s\n"
            % (address, port, answer))


def stunnel_config(address, port):
    return ("[tls]\naccept = %s:%d\nconnect = %s:%d\n"
            "cert = {INSTANCE_DIR}/certificates/%s.pem\n"
            % (address, port + TLS_PORT_OFFSET, address, port, CERTIFICATE_NAME))


def with_stunnel(n, stunnel_every=STUNNEL_EVERY):
    return n < KILL_TENANTS or n % stunnel_every == 0


def put_instances(machine, address, count):
    from concurrent.futures import ThreadPoolExecutor

    from support.nspawn import tenant_certificate

    certificate = tenant_certificate(CERTIFICATE_NAME)

    def put(n, path, body):
        for _attempt in range(20):  # 503: over the change cap, try again
            status, answer = machine.api("PUT", "/instances/%s/%s" % (instance_id(n), path),
                                         body)
            if status != 503:
                break
            time.sleep(0.5)
        if status not in (200, 201):
            raise SystemExit("PUT %s of instance %d: %d %s" % (path, n, status, answer))

    def tenant(n):
        put(n, "haproxy", tenant_config(address, FIRST_PORT + n, instance_id(n)))
        if with_stunnel(n):
            put(n, "certificates/%s.pem" % CERTIFICATE_NAME, certificate)
            put(n, "stunnel", stunnel_config(address, FIRST_PORT + n))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(tenant, range(count)))


def run_inside(machine, *words, timeout=600):
    completed = machine.run(["python3", PROBE] + [str(word) for word in words], timeout=timeout)
    return json.loads(completed.stdout)


def wait_for_api(machine, deadline):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if machine.api("GET", "/status", timeout=5)[0] == 200:
                return time.time()
        except Exception:  # noqa: BLE001 (not up yet: curl fails to connect)
            pass
        time.sleep(0.05)
    return None


def boot_figures(machine, address, count):
    """(seconds to the API answering, seconds to every tenant serving or the
    honest failure) of one boot of the machine holding count instances."""
    machine.poweroff()
    started = time.time()
    machine.boot(timeout=BOOT_DEADLINE)
    api_at = wait_for_api(machine, 30)
    probe = run_inside(machine, "all", address, FIRST_PORT, count, BOOT_DEADLINE, STUNNEL_EVERY,
                       timeout=BOOT_DEADLINE + 30)
    api = "%.2f s" % (api_at - started) if api_at else "no answer"
    if probe["serving"] == count:
        tenants = "%.2f s" % (probe["done_at"] - started)
    else:
        tenants = "not serving after %.0f s (%d of %d serve)" % (
            probe["done_at"] - started, probe["serving"], count)
    return api, tenants


def kill_figures(machine, address, service):
    seconds, failures = [], []
    tenants = min(KILL_TENANTS, COUNTS[0])
    for trial in range(TRIALS):
        n = trial % tenants
        result = run_inside(machine, "kill", address, FIRST_PORT + n, instance_id(n),
                            KILL_DEADLINE, service)
        if result["seconds"] is None:
            failures.append(result["reason"])
            break  # nothing brings it back: every further trial would wait as long
        seconds.append(result["seconds"])
        time.sleep(0.2)
    if failures:
        return "%s (after %d of %d trials)" % (failures[0], len(seconds), TRIALS)
    return "median %.0f ms, max %.0f ms (%d trials over %d tenants)" % (
        statistics.median(seconds) * 1000, max(seconds) * 1000, len(seconds), tenants)


def main():
    import shutil
    import tempfile

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from support import nspawn

    address = "%s.%d" % (nspawn.VIP_NETWORK, SERVICE_IP_SUFFIX)
    folder = tempfile.mkdtemp(prefix="bench-recovery-")
    try:
        base = nspawn.system_image()
        layers = [nspawn.install_appliance(base, folder), base]
        print("| instances | boot to API answering | boot to every tenant serving |")
        print("| ---: | ---: | ---: |")
        kill, memory = None, None
        for count in COUNTS:
            machine = nspawn.Machine(layers, os.path.join(folder, "machine-%d" % count))
            try:
                shutil.copy(os.path.abspath(__file__), machine.root + PROBE)
                machine.boot()
                put_instances(machine, address, count)
                if count == COUNTS[0]:  # on the daemons the PUTs started, before any reboot
                    kill = {service: kill_figures(machine, address, service)
                            for service in ("haproxy", "stunnel")}
                if count == COUNTS[-1]:
                    memory = run_inside(machine, "rss")["rss_kib"]
                    stunnels = sum(1 for n in range(count) if with_stunnel(n))
                api, tenants = boot_figures(machine, address, count)
                print("| %d | %s | %s |" % (count, api, tenants), flush=True)
            finally:
                machine.close()
        print()
        print("SIGKILL of a tenant's haproxy master to serving again: %s" % kill["haproxy"])
        print("SIGKILL of a tenant's stunnel to serving TLS again: %s" % kill["stunnel"])
        print("haproxy per tenant (master + worker) at %d instances: RSS %.1f MiB, PSS %.1f MiB"
              % (COUNTS[-1], memory["rss"]["haproxy"] / 1024 / COUNTS[-1],
                 memory["pss"]["haproxy"] / 1024 / COUNTS[-1]))
        print("stunnel per tenant with TLS at %d instances (%d stunnels): RSS %.1f MiB, "
              "PSS %.1f MiB" % (COUNTS[-1], stunnels, memory["rss"]["stunnel"] / 1024 / stunnels,
                                memory["pss"]["stunnel"] / 1024 / stunnels))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        inside(sys.argv[1:])
    else:
        main()
