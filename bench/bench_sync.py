"""make bench-sync: how soon a change made on the active node runs on the
standby, with the default period, and what a sync with nothing to do costs.

The pair of the test support (two nodes in network namespaces on a bridge,
each with lighttpd, haproxy and keepalived; one PKI). The systemd timer is
played by a loop here: `octctl sync` on the standby every PERIOD seconds,
start to start (OnUnitActiveSec). CHANGES times, at random moments, a new
certificate is PUT on the active node; the delay is from that PUT's answer
until the standby stores the same bytes (its PUT answers after its haproxy
reloaded). Every loop is bounded.
"""
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from support.polling import eventually  # noqa: E402
from support.netns import Pair, haproxy_config, shared_pki, sync_settings  # noqa: E402
import pki as pki_tool  # noqa: E402

PERIOD = float(os.environ.get("SYNC_PERIOD", "10"))
CHANGES = int(os.environ.get("SYNC_CHANGES", "10"))
HA_IP, SERVICE_IP = "192.0.2.100", "192.0.2.110"
PRIMARY, SECONDARY = Pair.NODES


def listener_bundle(ca):
    from cryptography.hazmat.primitives import serialization

    cert, key = pki_tool.make_leaf(ca[0], ca[1], "localhost", server=True, sans=["localhost"])
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + \
        cert.public_bytes(serialization.Encoding.PEM)


def octctl_sync(site):
    started = time.monotonic()
    completed = subprocess.run(list(site.namespace.prefix) + [
        sys.executable, os.path.join(ROOT, "bin", "octctl"), "--config",
        os.path.join(site.folder, "appliance-api.ini"), "sync"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return time.monotonic() - started, completed.stdout.strip()


def main():
    pki = shared_pki(tempfile.mkdtemp(prefix="bench-sync-pki-"), Pair.NODES)
    pair = Pair("y%d" % os.getpid())
    stop = threading.Event()
    try:
        active, standby = pair.start_sites({"sync": sync_settings(pki)}, pki=pki)
        pair.form(secret="benchsync")
        ca = pki_tool.make_ca("tenant CA")
        instance = str(uuid.uuid4())
        path = "/instances/%s/certificates/localhost.pem" % instance
        assert active("PUT", path, listener_bundle(ca).decode())[0] == 201
        code, body = active("PUT", "/instances/%s/haproxy" % instance, haproxy_config(
            SERVICE_IP + ":443 ssl crt {INSTANCE_DIR}/certificates/localhost.pem"))
        assert code == 201, body
        octctl_sync(standby)

        noop = [octctl_sync(standby) for _ in range(10)]
        assert all(", 0 changed," in line and "1 requests" in line for _, line in noop), noop

        def timer():
            while not stop.is_set():
                started = time.monotonic()
                octctl_sync(standby)
                stop.wait(max(0.0, PERIOD - (time.monotonic() - started)))
        ticking = threading.Thread(target=timer, daemon=True)
        ticking.start()
        stored = os.path.join(standby.instances_dir, instance, "certificates", "localhost.pem")
        delays = []
        for _change in range(CHANGES):
            time.sleep(random.uniform(0, PERIOD))
            bundle = listener_bundle(ca)
            assert active("PUT", path, bundle.decode())[0] == 201
            changed = time.monotonic()
            digest = hashlib.sha256(bundle).hexdigest()

            def arrived():
                try:
                    with open(stored, "rb") as file:
                        return hashlib.sha256(file.read()).hexdigest() == digest
                except OSError:
                    return False
            assert eventually(arrived, PERIOD * 3 + 30, 0.02), "the change never arrived"
            delays.append(time.monotonic() - changed)
        stop.set()
        ticking.join(60)

        print()
        print("Standby sync (period %g s, played by a loop as the timer would)" % PERIOD)
        print()
        print("| figure | value |")
        print("| --- | ---: |")
        print("| change on the active -> running on the standby, median of %d (max) | "
              "%.2f s (%.2f s) |" % (len(delays), statistics.median(delays), max(delays)))
        print("| sync with nothing to do: time, median of %d (max) | %.3f s (%.3f s) |" % (
            len(noop), statistics.median(t for t, _ in noop), max(t for t, _ in noop)))
        print("| sync with nothing to do: requests to the active node | 1 |")
    finally:
        stop.set()
        pair.close()


if __name__ == "__main__":
    main()
