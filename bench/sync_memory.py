"""The standby's sync against a hostile peer: peak memory (RSS) and time of
one `octctl sync` whose peer streams a huge manifest, or trickles one.

    python3 bench/sync_memory.py [--root CHECKOUT] [--mode stream=512] [--limit 60]

The peer is tests/support/fake_peer.py on 127.0.0.2 (TLS, a PKI made here);
the standby a state folder of its own with an ACTIVE-STANDBY topology whose
ha_ip is on no interface (so it is the standby). --root runs that checkout's
bin/octctl (an older commit's, to compare); the peer is always this one's.
Run as any user; nothing outside a temporary folder is touched.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = "127.0.0.2"


def free_port():
    with socket.socket() as sock:
        sock.bind((PEER, 0))
        return sock.getsockname()[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=HERE, help="the checkout whose octctl runs")
    parser.add_argument("--mode", default="stream=512",
                        help="fake_peer.py's mode: huge=<MiB>, stream=<MiB>, trickle=<s>")
    parser.add_argument("--limit", type=float, default=60,
                        help="seconds after which the sync is killed (and said to be)")
    arguments = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(HERE, "tools"))
    import pki

    folder = tempfile.mkdtemp(prefix="sync-memory-")
    pki.generate(os.path.join(folder, "pki"), server_addresses=[PEER])
    state_dir = os.path.join(folder, "state")
    os.makedirs(os.path.join(state_dir, "instances"))
    with open(os.path.join(state_dir, "topology.json"), "w") as file:
        json.dump({"topology": "ACTIVE-STANDBY", "role": "SECONDARY", "ha_ip": "192.0.2.100",
                   "primary_ip": PEER, "all_ips": [PEER, "127.0.0.1"],
                   "routing-mode": "LAYER2", "secret": "syncsecr"}, file)
    port = free_port()
    config = os.path.join(folder, "appliance-api.ini")
    with open(config, "w") as file:
        file.write("[paths]\nstate_dir = %s\n[network]\nmanage = no\nvip_interface = lo\n"
                   "[sync]\nca_file = %s\nclient_certificate = %s\nport = %d\n" % (
                       state_dir, os.path.join(folder, "pki", "ca.pem"),
                       os.path.join(folder, "pki", "client.pem"), port))
    peer = subprocess.Popen([sys.executable, os.path.join(HERE, "tests", "support",
                                                          "fake_peer.py"),
                             "--pem", os.path.join(folder, "pki", "server.pem"),
                             "--address", PEER, "--port", str(port), arguments.mode],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "listening"
        started = time.monotonic()
        sync = subprocess.Popen([sys.executable, os.path.join(arguments.root, "bin", "octctl"),
                                 "--config", config, "sync"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed = ""
        while True:
            pid, status, usage = os.wait4(sync.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > arguments.limit:
                sync.kill()
                killed = " (killed: still running after %g s)" % arguments.limit
                _pid, status, usage = os.wait4(sync.pid, 0)
                break
            time.sleep(0.05)
        took = time.monotonic() - started
        sync.returncode = os.waitstatus_to_exitcode(status)
        output = sync.stdout.read() + killed
    finally:
        peer.kill()
        peer.wait()
        shutil.rmtree(folder)
    lines = output.strip().splitlines()
    print("%s: exit %d, peak RSS %.0f MiB, %.1f s, %d lines of output; last: %s" % (
        arguments.mode, sync.returncode, usage.ru_maxrss / 1024, took,
        len(lines), lines[-1][:200] if lines else ""))


if __name__ == "__main__":
    main()
