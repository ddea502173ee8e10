"""An appliance under real systemd: the Debian 12 root of `make system-image`
with the checkout installed on top, booted with systemd-nspawn.

    base = system_image()                      # built once, cached under var/
    layer = install_appliance(base, folder)    # `make install` into a layer of its own
    with Machine([layer, base], folder) as machine:
        machine.api("GET", "/status")          # curl inside, over mutual TLS
        machine.run(["systemctl", "restart", "lighttpd"])
        machine.reboot()                       # poweroff, then boot the same root

Each Machine is an overlay (its own upper folder) on read-only layers, so
every test boots a fresh appliance and leaves the layers as they were. The
machine has only `lo` (--private-network); a oneshot unit of the test image
makes the management interface eth0 and the VIP interface eth1 (veth pairs)
before lighttpd starts, as an appliance's network configuration would.
Commands run inside through `nsenter -t LEADER -a` (LEADER: the machine's
systemd, PID 1 inside). Needs root, systemd-nspawn and debootstrap
(`make deps`).
"""
import os
import signal
import subprocess
import sys
import time
import uuid

from support.polling import eventually

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANAGEMENT_ADDRESS = "192.0.2.10"     # eth0: the API listens here (TEST-NET-1)
VIP_NETWORK = "198.51.100"            # eth1: tenants' service IPs (TEST-NET-2)
PKI = "/etc/appliance-api/pki"        # inside: the API's and the controller's certificates
BOOT_TIMEOUT = 90
NETWORK_UNIT = "appliance-test-network.service"
NETWORK_UNIT_TEXT = """\
# The test image's stand-in for an appliance's network configuration: the
# management interface (eth0) and the VIP interface (eth1), each a veth
# pair whose other end stays inside, so both are up and carry addresses.
[Unit]
Description=test image: management (eth0) and VIP (eth1) interfaces
DefaultDependencies=no
Wants=network.target
Before=network.target lighttpd.service appliance-api-supervisor.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link add eth0 type veth peer name eth0-wire
ExecStart=/usr/sbin/ip link add eth1 type veth peer name eth1-wire
ExecStart=/usr/sbin/ip addr add {management}/24 dev eth0
ExecStart=/usr/sbin/ip addr add {vip_network}.10/24 dev eth1
ExecStart=/usr/sbin/ip link set eth0-wire up
ExecStart=/usr/sbin/ip link set eth1-wire up
ExecStart=/usr/sbin/ip link set eth0 up
ExecStart=/usr/sbin/ip link set eth1 up

[Install]
WantedBy=multi-user.target
""".format(management=MANAGEMENT_ADDRESS, vip_network=VIP_NETWORK)


def system_image():
    """The cached Debian 12 root (`make system-image` builds it the first time)."""
    output = subprocess.run(["make", "-s", "-C", REPOSITORY, "system-image"], check=True,
                            stdout=subprocess.PIPE, text=True).stdout
    return output.strip().splitlines()[-1]


def install_appliance(base, folder, make_variables=()):
    """A layer holding what `make install` puts in an appliance image, the
    API's PKI (server certificate for MANAGEMENT_ADDRESS; the controller's
    client.pem beside it, for curl inside) and the test network unit. The
    base's top-level links (/lib -> usr/lib on Debian 12) are copied first,
    or the layer's /lib would hide the base's."""
    layer = os.path.join(folder, "layer")
    os.makedirs(layer)
    for name in os.listdir(base):
        if os.path.islink(os.path.join(base, name)):
            os.symlink(os.readlink(os.path.join(base, name)), os.path.join(layer, name))
    subprocess.run(["make", "-s", "-C", REPOSITORY, "install", "DESTDIR=" + layer, "PREFIX=/usr"]
                   + list(make_variables), check=True)
    subprocess.run([sys.executable, os.path.join(REPOSITORY, "tools", "pki.py"), "--out",
                    layer + PKI, "--server-address", MANAGEMENT_ADDRESS], check=True,
                   stdout=subprocess.DEVNULL)
    units = os.path.join(layer, "etc/systemd/system")
    os.makedirs(os.path.join(units, "multi-user.target.wants"), exist_ok=True)
    with open(os.path.join(units, NETWORK_UNIT), "w") as file:
        file.write(NETWORK_UNIT_TEXT)
    os.symlink("../" + NETWORK_UNIT, os.path.join(units, "multi-user.target.wants", NETWORK_UNIT))
    # The API's {MYIP} and the interfaces /status reports: this machine's own.
    ini = os.path.join(layer, "etc/appliance-api/appliance-api.ini")
    with open(ini) as file:
        text = file.read()
    with open(ini, "w") as file:
        file.write(text.replace("management_address = 127.0.0.1",
                                "management_address = " + MANAGEMENT_ADDRESS))
    return layer


def tenant_certificate(common_name):
    """A tenant's key and certificate file (what PUT .../certificates/
    <common_name>.pem takes), of a CA made for it (tools/pki.py)."""
    sys.path.insert(0, os.path.join(REPOSITORY, "tools"))
    import pki

    ca_cert, ca_key = pki.make_ca("tenant CA of " + common_name)
    cert, key = pki.make_leaf(ca_cert, ca_key, common_name, server=True, sans=[common_name])
    return (pki._key_pem(key) + pki._cert_pem(cert)).decode()


class CommandFailed(Exception):
    pass


class Machine:
    """One booted appliance: an overlay of `lowers` (first on top) in folder."""

    def __init__(self, lowers, folder):
        self.folder = folder
        self.root = os.path.join(folder, "root")
        self.upper = os.path.join(folder, "upper")
        self.work = os.path.join(folder, "work")
        for path in (self.root, self.upper, self.work):
            os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,"
                        "workdir=%s" % (":".join(lowers), self.upper, self.work), self.root],
                       check=True)
        with open(os.path.join(self.root, "etc/machine-id"), "w") as file:
            file.write(uuid.uuid4().hex + "\n")  # one id for every boot: one journal
        self.cgroups = own_cgroups("appliance-nspawn-" + uuid.uuid4().hex[:12])
        self.process = None
        self.leader = None
        self.boots = 0

    # Boot and power.
    def boot(self, timeout=BOOT_TIMEOUT):
        """Boot and wait until systemd inside has finished starting (running
        or degraded); returns the seconds that took."""
        assert self.process is None, "already running"
        self.boots += 1
        console = open(os.path.join(self.folder, "console-%d.log" % self.boots), "wb")
        started = time.monotonic()
        self.process = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--private-network",
             "--link-journal=no", "--console=read-only", "-D", self.root, "--boot"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            preexec_fn=lambda: join_cgroups(self.cgroups))
        console.close()
        self.leader = eventually(self._find_leader, timeout=10)
        if not self.leader:
            raise CommandFailed("no systemd inside systemd-nspawn: see %s" % console.name)
        state = eventually(self._boot_finished, timeout=timeout, interval=0.1)
        if not state:
            raise CommandFailed("the machine did not finish booting in %d s: %s"
                                % (timeout, self.system_state()))
        return time.monotonic() - started

    def _find_leader(self):
        if self.process.poll() is not None:
            raise CommandFailed("systemd-nspawn exited with %s" % self.process.returncode)
        for child in _children(self.process.pid):
            if _comm(child) == "systemd":
                return child
        return None

    def _boot_finished(self):
        state = self.system_state()
        return state if state in ("running", "degraded") else None

    def system_state(self):
        return self.run(["systemctl", "is-system-running"], check=False).stdout.strip()

    def poweroff(self, timeout=60):
        """`systemctl poweroff` inside, and wait for systemd-nspawn to exit."""
        self.run(["systemctl", "poweroff"], check=False)
        try:
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.kill()
        self.process = self.leader = None

    def reboot(self, timeout=BOOT_TIMEOUT):
        """A poweroff and a fresh boot of the same root (a new network
        namespace, /run and control groups: what a reboot keeps is the disk)."""
        self.poweroff()
        return self.boot(timeout)

    def kill(self):
        """SIGKILL to PID 1 inside ends every process of the machine (its pid
        namespace); systemd-nspawn then exits. Killing nspawn alone would
        leave the machine running, orphaned."""
        for pid in (self.leader, self.process.pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(10)
                    return
                except subprocess.TimeoutExpired:
                    continue

    def close(self):
        try:
            if self.process is not None:
                try:
                    self.poweroff(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            subprocess.run(["umount", self.root], check=False)
            remove_cgroups(self.cgroups)

    def __enter__(self):
        try:
            self.boot()
        except BaseException:
            self.close()  # the overlay and the groups, even for a machine that never came up
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    # Inside.
    def run(self, argv, check=True, timeout=60, input=None):
        """argv inside the machine (all its namespaces: mounts, network, pids)."""
        completed = subprocess.run(["nsenter", "-t", str(self.leader), "-a"] + list(argv),
                                   input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, timeout=timeout)
        if check and completed.returncode != 0:
            raise CommandFailed("%s: exit %d\n%s%s" % (" ".join(argv), completed.returncode,
                                                       completed.stdout, completed.stderr))
        return completed

    def api(self, method, path, body=None, timeout=60, content_type="text/plain"):
        """(status, body) of a request to the installed API, from inside, with
        the controller's client certificate (a form: content_type
        application/x-www-form-urlencoded)."""
        argv = ["curl", "-sS", "--max-time", str(timeout), "--cacert", PKI + "/ca.pem",
                "-E", PKI + "/client.pem", "-X", method, "-w", "\n%{http_code}",
                "https://%s%s" % (MANAGEMENT_ADDRESS, path)]
        if body is not None:
            argv[1:1] = ["--data-binary", "@-", "-H", "Content-Type: " + content_type]
        completed = self.run(argv, check=False, timeout=timeout + 5, input=body)
        text, _, status = completed.stdout.rpartition("\n")
        if completed.returncode != 0:
            raise CommandFailed("curl %s %s: exit %d %s" % (method, path, completed.returncode,
                                                            completed.stderr))
        return int(status), text

    def http_get(self, address, port, path="/", timeout=2, tls=False):
        """The body of a plain HTTP GET inside (a tenant's listener), or None
        when nothing answers it. tls: HTTPS, the certificate not verified (a
        tenant's stunnel serving at all is the question, not its PKI)."""
        url = "%s://%s:%d%s" % ("https" if tls else "http", address, port, path)
        completed = self.run(["curl", "-sS", "--max-time", str(timeout)]
                             + (["--insecure"] if tls else []) + [url], check=False,
                             timeout=timeout + 5)
        return completed.stdout if completed.returncode == 0 else None

    def pids_of(self, program):
        """Pids (inside) of the processes whose command is program."""
        completed = self.run(["pgrep", "-x", program], check=False)
        return sorted(int(pid) for pid in completed.stdout.split())

    def cgroup_of(self, pid):
        """The unified (cgroup v2) path of a process inside, as systemd sees it."""
        text = self.run(["cat", "/proc/%d/cgroup" % pid]).stdout
        paths = dict(line.split(":", 2)[1:] for line in text.splitlines())
        return paths.get("name=systemd", paths.get(""))

    def unit_pids(self, unit):
        """Every pid (inside) in unit's control group, from the hierarchy
        systemd tracks processes in (name=systemd on a hybrid host)."""
        group = self.run(["systemctl", "show", "-P", "ControlGroup", unit]).stdout.strip()
        if not group:
            return []
        for hierarchy in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup"):
            completed = self.run(["cat", hierarchy + group + "/cgroup.procs"], check=False)
            if completed.returncode == 0:
                return sorted(int(pid) for pid in completed.stdout.split())
        raise CommandFailed("no cgroup.procs for %s (%s)" % (unit, group))

    def main_pid(self, unit):
        return int(self.run(["systemctl", "show", "-P", "MainPID", unit]).stdout)

    def failed_units(self):
        return self.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend",
                         "--no-pager"]).stdout.split("\n")[:-1]

    def journal(self, *options):
        """The journal inside (persistent: every boot of this root), as text."""
        return self.run(["journalctl", "--no-pager", "-q"] + list(options)).stdout


def _children(pid):
    children = []
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as file:
                children.extend(int(child) for child in file.read().split())
    except FileNotFoundError:
        pass
    return children


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as file:
            return file.read().strip()
    except FileNotFoundError:
        return None


def own_cgroups(name):
    """A control group of its own in each hierarchy systemd-nspawn uses
    (cgroup v2, and the v1 name=systemd one on hybrid hosts): nspawn makes
    the machine's groups under its own group, and two machines started
    from one group would share them."""
    folders = []
    for hierarchy in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(hierarchy, "cgroup.procs")):
            folder = os.path.join(hierarchy, name)
            os.mkdir(folder)
            folders.append(folder)
    return folders


def join_cgroups(folders):
    for folder in folders:
        with open(os.path.join(folder, "cgroup.procs"), "w") as file:
            file.write(str(os.getpid()))


def remove_cgroups(folders):
    """The groups, and what nspawn made under them, deepest first (each empty
    by now: the machine's processes are gone)."""
    for folder in folders:
        for directory, _subdirs, _files in sorted(os.walk(folder, topdown=False),
                                                  key=lambda entry: -entry[0].count("/")):
            try:
                os.rmdir(directory)
            except OSError:
                pass
