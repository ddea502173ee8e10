"""make bench-recovery: how fast the installed appliance heals, under real
systemd (the Debian 12 image of `make system-image`, booted with
systemd-nspawn as tests/system does).

- Boot to every tenant serving, at 10, 100 and 500 instances (RECOVERY_COUNTS):
  the instances are PUT through the API (4 at a time, the change cap), the
  machine is powered off and booted again, and the time runs from the start
  of systemd-nspawn until every tenant's listener answers; also from the
  start until the API answers /status. No API call is made after the boot.
- SIGKILL of a tenant's haproxy master to serving again: RECOVERY_TRIALS
  (20) kills, at the smallest count, before its reboot; median and max. "Serving again" is an answer from a new master
  (the pid file names another live process), so the dying worker's last
  answers are not counted.
- Memory per tenant: the RSS of its haproxy processes (master + worker), at
  the largest count, as the PUTs left them.

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


def probe_all(address, first_port, count, deadline):
    """When (wall clock, the host's too: one kernel) every tenant answered,
    or the deadline passed; how many did."""
    waiting = {first_port + n: instance_id(n) for n in range(count)}
    end = time.monotonic() + deadline
    while waiting and time.monotonic() < end:
        for port, expected in list(waiting.items()):
            if answers(address, port, expected, timeout=0.2):
                del waiting[port]
        if waiting:
            time.sleep(0.05)
    return {"done_at": time.time(), "serving": count - len(waiting)}


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


def kill_and_wait(address, port, instance, deadline):
    """SIGKILL the instance's haproxy master; seconds until a new master serves."""
    pid_file = "%s/%s/haproxy.pid" % (STATE, instance)
    killed = read_pid(pid_file)
    if killed is None or not alive(killed):
        return {"seconds": None, "reason": "no haproxy running to kill (pid file: %s)" % killed}
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        pid = read_pid(pid_file)
        if pid not in (None, killed) and alive(pid) and answers(address, port, instance, 0.2):
            return {"seconds": time.monotonic() - started}
        time.sleep(0.005)
    return {"seconds": None, "reason": "not serving after %.0f s" % deadline}


def haproxy_rss_kib():
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/status" % pid) as file:
                fields = dict(line.split(":", 1) for line in file if ":" in line)
        except OSError:
            continue
        if fields.get("Name", "").strip() == "haproxy":
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total


def inside(argv):
    command = argv[0]
    if command == "all":
        result = probe_all(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
    elif command == "kill":
        result = kill_and_wait(argv[1], int(argv[2]), argv[3], float(argv[4]))
    else:
        result = {"rss_kib": haproxy_rss_kib()}
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


def put_instances(machine, address, count):
    from concurrent.futures import ThreadPoolExecutor

    def put(n):
        for _attempt in range(20):  # 503: over the change cap, try again
            status, body = machine.api("PUT", "/instances/%s/haproxy" % instance_id(n),
                                       tenant_config(address, FIRST_PORT + n, instance_id(n)))
            if status != 503:
                break
            time.sleep(0.5)
        if status not in (200, 201):
            raise SystemExit("PUT of instance %d: %d %s" % (n, status, body))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(count)))


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
    probe = run_inside(machine, "all", address, FIRST_PORT, count, BOOT_DEADLINE,
                       timeout=BOOT_DEADLINE + 30)
    api = "%.2f s" % (api_at - started) if api_at else "no answer"
    if probe["serving"] == count:
        tenants = "%.2f s" % (probe["done_at"] - started)
    else:
        tenants = "not serving after %.0f s (%d of %d serve)" % (
            probe["done_at"] - started, probe["serving"], count)
    return api, tenants


def kill_figures(machine, address):
    seconds, failures = [], []
    for _trial in range(TRIALS):
        result = run_inside(machine, "kill", address, FIRST_PORT, instance_id(0), KILL_DEADLINE)
        if result["seconds"] is None:
            failures.append(result["reason"])
            break  # nothing brings it back: every further trial would wait as long
        seconds.append(result["seconds"])
        time.sleep(0.2)
    if failures:
        return "%s (after %d of %d trials)" % (failures[0], len(seconds), TRIALS)
    return "median %.0f ms, max %.0f ms (%d trials)" % (
        statistics.median(seconds) * 1000, max(seconds) * 1000, len(seconds))


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
                    kill = kill_figures(machine, address)
                if count == COUNTS[-1]:
                    memory = run_inside(machine, "rss")["rss_kib"] / count
                api, tenants = boot_figures(machine, address, count)
                print("| %d | %s | %s |" % (count, api, tenants), flush=True)
            finally:
                machine.close()
        print()
        print("SIGKILL of a tenant's haproxy master to serving again: %s" % kill)
        print("haproxy RSS per tenant (master + worker) at %d instances: %.1f MiB"
              % (COUNTS[-1], memory / 1024))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        inside(sys.argv[1:])
    else:
        main()
