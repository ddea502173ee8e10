#!/usr/bin/env python3
"""The Debian 12 root that tests/system boots with systemd-nspawn: debootstrap
(minbase + systemd) plus the appliance's runtime packages, built once and
kept under var/system-image/<key>/root, the key being a hash of what goes in
it (the package list, the Debian mirror, this script). The checkout itself
is not in it: each test run installs it into an overlay on top
(tests/support/nspawn.py), so a change of the code rebuilds nothing.

    python3 tools/system_image.py --cache var/system-image PACKAGE...

prints the root's path (building it first if it is missing). Stdlib only:
it runs before the venv exists.
"""
import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# The image boots as an appliance: the Debian units of the daemons the API
# runs itself (each with its own config under the state folder) stay off.
DEBIAN_UNITS_OFF = ("haproxy.service", "keepalived.service", "stunnel.target")
# An appliance keeps its journal across reboots (the tests read an earlier boot's).
PERSISTENT_JOURNAL = "var/log/journal"


def apt_stanzas():
    """The deb822 stanzas of this machine's apt sources that serve Debian 12
    (bookworm, -updates, -security): the image uses the mirror apt uses here."""
    stanzas = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as file:
            for block in file.read().split("\n\n"):
                fields = {}
                for line in block.splitlines():
                    if line and not line.startswith("#") and ":" in line:
                        key, _, value = line.partition(":")
                        fields[key.strip()] = value.strip()
                suites = fields.get("Suites", "").split()
                if suites and all(s.split("-")[0] == SUITE for s in suites) \
                        and "deb" in fields.get("Types", "").split():
                    stanzas.append({"URIs": fields["URIs"].split()[0], "Suites": " ".join(suites),
                                    "Components": fields.get("Components", "main")})
    return stanzas


def main_mirror(stanzas):
    for stanza in stanzas:
        if SUITE in stanza["Suites"].split():
            return stanza["URIs"]
    return FALLBACK_MIRROR


def image_key(packages, stanzas):
    digest = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as file:
        digest.update(file.read())
    digest.update(repr((sorted(packages), stanzas)).encode())
    return digest.hexdigest()[:16]


def sources_text(stanzas):
    return "\n".join("Types: deb\nURIs: %(URIs)s\nSuites: %(Suites)s\nComponents: %(Components)s\n"
                     "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" % stanza
                     for stanza in stanzas)


def chroot(root, *argv):
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
                   "LC_ALL": "C"}
    run(["chroot", root] + list(argv), env=environment)


def run(argv, **options):
    """argv, quiet unless it fails (apt and debootstrap chatter on stderr
    about the chroot they run in: no /proc, no runlevel)."""
    completed = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, **options)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout)
        raise SystemExit("system_image: %s failed (exit %d)" % (" ".join(argv[:3]),
                                                                  completed.returncode))


def build(root, packages, stanzas):
    mirror = main_mirror(stanzas)
    run(["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus", SUITE, root,
         mirror])
    if stanzas:
        os.unlink(os.path.join(root, "etc/apt/sources.list"))
        with open(os.path.join(root, "etc/apt/sources.list.d/debian.sources"), "w") as file:
            file.write(sources_text(stanzas))
    shutil.copy("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    # No package's maintainer script may start its daemon in the chroot.
    policy = os.path.join(root, "usr/sbin/policy-rc.d")
    with open(policy, "w") as file:
        file.write("#!/bin/sh\nexit 101\n")
    os.chmod(policy, 0o755)
    try:
        chroot(root, "apt-get", "update", "-qq")
        chroot(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages)
        chroot(root, "apt-get", "clean")
    finally:
        os.unlink(policy)
    for unit in DEBIAN_UNITS_OFF:
        if os.path.exists(os.path.join(root, "lib/systemd/system", unit)):
            chroot(root, "systemctl", "disable", "--quiet", unit)
    os.makedirs(os.path.join(root, PERSISTENT_JOURNAL), exist_ok=True)
    # Each boot's layer writes its own machine id (tests/support/nspawn.py).
    open(os.path.join(root, "etc/machine-id"), "w").close()


def remove_other_images(cache, keep):
    """Older keys' roots, unless something (an overlay of a run) still uses one."""
    with open("/proc/self/mountinfo") as file:
        mounts = file.read()
    for folder in glob.glob(os.path.join(cache, "*")):
        if os.path.basename(folder) != keep and folder not in mounts:
            shutil.rmtree(folder, ignore_errors=True)


def ensure(cache, packages):
    """The root for these packages, built if missing; its path."""
    stanzas = apt_stanzas()
    key = image_key(packages, stanzas)
    folder = os.path.join(os.path.abspath(cache), key)
    root = os.path.join(folder, "root")
    if os.path.isdir(root):
        return root
    os.makedirs(cache, exist_ok=True)
    remove_other_images(cache, key)
    # Built aside and renamed: a build killed half-way is never taken for an image.
    scratch = tempfile.mkdtemp(prefix=".building-", dir=cache)
    try:
        build(os.path.join(scratch, "root"), packages, stanzas)
        os.rename(scratch, folder)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="folder of the built roots")
    parser.add_argument("packages", nargs="+", help="Debian packages installed in the image")
    arguments = parser.parse_args(argv)
    if not shutil.which("debootstrap"):
        sys.exit("system_image: debootstrap is missing (make deps installs it)")
    print(ensure(arguments.cache, arguments.packages))


if __name__ == "__main__":
    main()
