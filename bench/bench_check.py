"""What confining haproxy's check costs (`make bench-check`): the same
`haproxy -c` of a TLS config with its certificate, run bare and confined
(system/confinement.py: nobody, fresh namespaces, a copy of the instance's
files), interleaved in one run; medians, p90 and the ratio.

Runs as root (the confinement needs it); touches only a temporary folder.
"""
import argparse
import os
import sys
import tempfile
import time
import uuid

import benchlib

sys.path.insert(0, os.path.join(benchlib.ROOT, "lib"))

from appliance_api.layout import Instance  # noqa: E402
from appliance_api.system import commands  # noqa: E402
from appliance_api.system.confinement import Confinement  # noqa: E402

CONFIG = """global
    maxconn 100
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:%d ssl crt %s
    default_backend be
backend be
    server s1 127.0.0.1:%d
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        instance = Instance(folder, str(uuid.uuid4()))
        os.makedirs(instance.certificates_dir)
        ca_cert, ca_key = benchlib.pki.make_ca("bench CA")
        cert, key = benchlib.pki.make_leaf(ca_cert, ca_key, "localhost", server=True,
                                           sans=["localhost"])
        with open(instance.certificate("localhost.pem"), "wb") as file:
            file.write(benchlib.pki.pem_bundle(cert, key))
        candidate = os.path.join(instance.dir, ".haproxy.candidate.tmp")
        with open(candidate, "w") as file:
            file.write(CONFIG % (benchlib.free_port(), instance.certificate("localhost.pem"),
                                 benchlib.free_port()))
        argv = ["/usr/sbin/haproxy", "-c", "-V", "-f", candidate]
        bare, confined = [], []
        for _ in range(arguments.runs):
            started = time.perf_counter()
            assert commands.run(argv, cwd=instance.dir).ok
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            with Confinement(instance.dir, [os.path.basename(candidate), "certificates",
                                            "custom503.http"]) as confinement:
                assert commands.run(argv, confinement=confinement).ok
            confined.append(time.perf_counter() - started)
    rows = [[name, benchlib.ms(benchlib.median(times)), benchlib.ms(benchlib.p90(times))]
            for name, times in (("haproxy -c, bare", bare), ("haproxy -c, confined", confined))]
    print(benchlib.table(["check (%d runs each, interleaved)" % arguments.runs, "median",
                          "p90"], rows))
    print("confined / bare (medians): %.2fx, +%s" % (
        benchlib.median(confined) / benchlib.median(bare),
        benchlib.ms(benchlib.median(confined) - benchlib.median(bare))))


if __name__ == "__main__":
    main()
