#!/usr/bin/python3
"""Lay out a runnable site in one folder: lighttpd config, its local include,
the API's config file and a state folder. `make run` and the end-to-end tests
use it; an appliance gets the same files from `make install` instead.
Standard library only.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lighttpd_local  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_site(folder, addresses, port, pki, python, management_address=None,
               manage_network=False, vip_interface="lo", api_settings=None):
    """Write <folder>/{lighttpd.conf, appliance-api.local.conf, appliance-api.ini},
    with state in <folder>/state and logs in <folder>/log. Returns the lighttpd config path."""
    folder = os.path.abspath(folder)
    for sub in ("state", "log"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    config_path = os.path.join(folder, "appliance-api.ini")
    pki = os.path.abspath(pki)
    pid_file = os.path.join(folder, "lighttpd.pid")
    sections = {
        "api": {"management_address": management_address or addresses[0],
                "certificate_file": os.path.join(pki, "server.pem"),
                "lighttpd_pid_file": pid_file},
        "paths": {"state_dir": os.path.join(folder, "state")},
        "network": {"manage": "yes" if manage_network else "no", "vip_interface": vip_interface},
        "status": {"network_interfaces": "all"},
    }
    for section, values in (api_settings or {}).items():
        sections.setdefault(section, {}).update(values)
    with open(config_path, "w") as file:
        for section, values in sections.items():
            file.write("[%s]\n" % section)
            for key, value in values.items():
                file.write("%s = %s\n" % (key, value))
    shutil.copy(os.path.join(ROOT, "conf", "lighttpd.conf"), os.path.join(folder, "lighttpd.conf"))
    with open(os.path.join(folder, "appliance-api.local.conf"), "w") as file:
        file.write(lighttpd_local.render(
            addresses, port, ROOT, python, config_path, pki,
            os.path.join(folder, "log"), pid_file))
    return os.path.join(folder, "lighttpd.conf")


def check_lighttpd_config(lighttpd_conf):
    """None when `lighttpd -tt` accepts the config (it loads every module);
    otherwise one line saying what is wrong, and what to install when a
    module is missing (Debian ships some, mod_openssl among them, apart)."""
    try:
        check = subprocess.run(["lighttpd", "-tt", "-f", lighttpd_conf], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        return "lighttpd is not installed: install the Debian package lighttpd (make deps does)"
    if check.returncode == 0:
        return None
    missing = re.search(r"dlopen\(\) failed for: (\S*/(mod_\w+)\.so)", check.stdout)
    if missing:
        path, module = missing.groups()
        return ("lighttpd cannot load %s (%s is missing): install the Debian package %s "
                "(make deps does)" % (module, path, "lighttpd-mod-" + module[4:].replace("_", "-")))
    errors = [line for line in check.stdout.splitlines() if line.strip()]
    return "lighttpd refuses %s: %s" % (lighttpd_conf, errors[-1] if errors else
                                        "exit status %d" % check.returncode)


def start_lighttpd(lighttpd_conf, address, port, timeout=10, prefix=()):
    """Start lighttpd in the foreground on a site written by write_site, and
    return its Popen once the port accepts connections. prefix runs it under
    another command, e.g. ("ip", "netns", "exec", NAME)."""
    # By its absolute path, as systemd starts it: lighttpd's graceful restart
    # in the background (conf/lighttpd.conf) needs a path with a slash.
    process = subprocess.Popen(list(prefix) + [lighttpd_program(), "-D", "-f", lighttpd_conf],
                               stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("lighttpd exited with %d" % process.returncode)
        if _accepts(address, port, prefix):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("lighttpd did not listen on %s:%d within %ds" % (address, port, timeout))


def lighttpd_program():
    return shutil.which("lighttpd") or "/usr/sbin/lighttpd"


def stop_lighttpd(process):
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _accepts(address, port, prefix=()):
    if prefix:  # inside a network namespace: ask from there
        probe = "import socket; socket.create_connection((%r, %d), 0.5)" % (address, port)
        return subprocess.run(list(prefix) + [sys.executable, "-c", probe],
                              stderr=subprocess.DEVNULL).returncode == 0
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--address", action="append", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pki", required=True)
    parser.add_argument("--python", required=True)
    args = parser.parse_args()
    lighttpd_conf = write_site(args.folder, args.address, args.port, args.pki, args.python)
    problem = check_lighttpd_config(lighttpd_conf)
    if problem:
        sys.exit("make run: " + problem)
    print(lighttpd_conf)


if __name__ == "__main__":
    main()
