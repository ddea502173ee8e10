"""Where an instance's files live: the one module that knows the on-disk layout.

    <state_dir>/instances/<instance id>/
        lock                        flock()ed by every change to the instance
        haproxy.cfg                 the template as uploaded (what GET returns)
        haproxy.rendered.cfg        {MYIP} and {INSTANCE_DIR} filled in: what runs
        haproxy.pid  haproxy.log    the daemon's pid file and its own output
        haproxy.outcome             the last start or reload: when, and what it said
        master.sock                 haproxy's master CLI: reload verdicts, figures
        haproxy.counters            the counters kept across haproxy's workers (JSON)
        stunnel.conf  stunnel.rendered.conf  stunnel.pid  stunnel.log  stunnel.outcome
        stunnel.listeners           the listeners the API bound and handed to stunnel
        reload.pending              a change stored files its daemons have not read yet
        custom503.http              a full HTTP response for haproxy's errorfile
        certificates/<name>.pem     key + certificate + chain, mode 0600
        crt-lists/<name>            haproxy crt-lists, {INSTANCE_DIR} filled in (crtlist.py)
    <state_dir>/status-sample.json  the last /status sample, for rates
    <state_dir>/change-slots/<n>    flock()ed by a change in progress (the cap)
    <state_dir>/appliance.lock      flock()ed while what instances share changes
    <state_dir>/owned-addresses.json  the service IPs the API added (and may remove)
    <state_dir>/topology.json       the stored topology (0600: it holds the pair's secret)
    <state_dir>/topology.lock       flock()ed while a topology change runs
    <state_dir>/vrrp/               keepalived: its config, pid files, output, last state
    <state_dir>/sync.lock, sync-state.json  the standby's sync runs and their outcome

An instance exists while it has any uploaded file (a config, the 503 page,
a certificate or a crt-list); the lock, pid files and logs alone do not make one.
"""
import os

INSTANCE_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The contract's :filename.pem: letters, digits, - . _; no leading dot; <= 255 bytes.
CERTIFICATE_NAME = r"(?!\.)[A-Za-z0-9._-]{1,251}\.pem"
# A crt-list's name: as a certificate's, without the .pem rule.
CRT_LIST_NAME = r"(?!\.)[A-Za-z0-9._-]{1,255}"

# Start order matters: a stunnel in front of haproxy starts after it.
SERVICES = ("haproxy", "stunnel")
TEMPLATE_NAMES = {"haproxy": "haproxy.cfg", "stunnel": "stunnel.conf"}
RENDERED_NAMES = {"haproxy": "haproxy.rendered.cfg", "stunnel": "stunnel.rendered.conf"}
# Each daemon's process name as /proc/<pid>/stat spells it (Debian's stunnel is stunnel4).
PROCESS_NAMES = {"haproxy": (b"haproxy",), "stunnel": (b"stunnel4", b"stunnel"),
                 "keepalived": (b"keepalived",)}
CUSTOM503_NAME = "custom503.http"
CERTIFICATES_NAME = "certificates"
CRT_LISTS_NAME = "crt-lists"
LOCK_NAME = "lock"
MASTER_SOCKET_NAME = "master.sock"
# haproxy's counters over the instance's life on this node (system/haproxy_counters.py).
COUNTERS_NAME = "haproxy.counters"
# Present while stored files are ahead of the running daemons (running.py).
RELOAD_PENDING_NAME = "reload.pending"
# The services an operator stopped on purpose (octctl stop): not to be started
# again, by the supervisor or at boot, until octctl start or a new config.
STOPPED_NAME = "stopped.by-operator"
# The listeners handed to the running stunnel, "service address:port" a line.
STUNNEL_LISTENERS_NAME = "stunnel.listeners"
# The API's own files in an instance folder: a config may not name them.
MANAGED_NAMES = frozenset([LOCK_NAME, MASTER_SOCKET_NAME, STUNNEL_LISTENERS_NAME,
                           RELOAD_PENDING_NAME, STOPPED_NAME, COUNTERS_NAME]
                          + list(TEMPLATE_NAMES.values())
                          + list(RENDERED_NAMES.values())
                          + ["%s.%s" % (service, kind) for service in SERVICES
                             for kind in ("pid", "log", "outcome")])

_UUID_CHARACTERS = "0123456789abcdef-"
_CERTIFICATE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ" "abcdefghijklmnopqrstuvwxyz"
                                    "0123456789._-")


def is_instance_id(name):
    """Whether name matches INSTANCE_ID: a canonical lower-case UUID. Without
    `re`, which a read of many instance folders need not import. (Stripping
    the allowed characters leaves nothing only if there is no other one.)"""
    return (len(name) == 36 and name[8:24:5] == "----" and name.count("-") == 4
            and not name.strip(_UUID_CHARACTERS))


def is_certificate_name(name):
    """Whether name matches CERTIFICATE_NAME, without `re`."""
    return (5 <= len(name) <= 255 and name.endswith(".pem") and not name.startswith(".")
            and _CERTIFICATE_CHARACTERS.issuperset(name))


def is_crt_list_name(name):
    """Whether name matches CRT_LIST_NAME, without `re`."""
    return 1 <= len(name) <= 255 and not name.startswith(".") \
        and _CERTIFICATE_CHARACTERS.issuperset(name)


def fill_template(template, instance_dir, management_address):
    """A config template with {MYIP} and {INSTANCE_DIR} filled in: what runs,
    but for the options a daemon adds of its own (stunnel's pid and log)."""
    return (template.replace("{MYIP}", management_address)
                    .replace("{INSTANCE_DIR}", os.path.abspath(instance_dir)))


def instances_dir(state_dir):
    return os.path.join(state_dir, "instances")


def status_sample_path(state_dir):
    return os.path.join(state_dir, "status-sample.json")


def appliance_lock_path(state_dir):
    return os.path.join(state_dir, "appliance.lock")


def api_certificate_lock_path(state_dir):
    """Held by PUT /certificate from its check to lighttpd serving the new file."""
    return os.path.join(state_dir, "api-certificate.lock")


def topology_path(state_dir):
    return os.path.join(state_dir, "topology.json")


def topology_lock_path(state_dir):
    return os.path.join(state_dir, "topology.lock")


def sync_lock_path(state_dir):
    return os.path.join(state_dir, "sync.lock")


def sync_state_path(state_dir):
    return os.path.join(state_dir, "sync-state.json")


def vrrp_dir(state_dir):
    return os.path.join(state_dir, "vrrp")


def supervisor_status_path(state_dir):
    """What the supervisor restarted and what backs off (supervisor.py)."""
    return os.path.join(state_dir, "supervisor.json")


def owned_addresses_path(state_dir):
    return os.path.join(state_dir, "owned-addresses.json")


def change_slot_path(state_dir, number):
    return os.path.join(state_dir, "change-slots", str(number))


class Instance:
    """The paths of one instance. Building one does not touch the disk."""

    def __init__(self, state_dir, instance_id):
        if not is_instance_id(instance_id):
            raise ValueError("not an instance id: %r" % instance_id)
        self.id = instance_id
        # Plain concatenation: /status builds a thousand of these per request.
        self.dir = os.path.join(state_dir, "instances") + "/" + instance_id
        self.lock_path = self.dir + "/" + LOCK_NAME
        self.custom503 = self.dir + "/" + CUSTOM503_NAME
        self.certificates_dir = self.dir + "/" + CERTIFICATES_NAME
        self.crt_lists_dir = self.dir + "/" + CRT_LISTS_NAME
        # What configured_services() found when existing_instances(snapshot=True)
        # listed it, so that a read-only view asks the disk once; else None.
        self._configured = None

    def template(self, service):
        return self.dir + "/" + TEMPLATE_NAMES[service]

    def rendered(self, service):
        return self.dir + "/" + RENDERED_NAMES[service]

    def pid_file(self, service):
        return self.dir + "/" + service + ".pid"

    def log(self, service):
        return self.dir + "/" + service + ".log"

    def outcome(self, service):
        return self.dir + "/" + service + ".outcome"

    @property
    def reload_pending(self):
        return self.dir + "/" + RELOAD_PENDING_NAME

    @property
    def stopped_record(self):
        return self.dir + "/" + STOPPED_NAME

    @property
    def master_socket(self):
        return self.dir + "/" + MASTER_SOCKET_NAME

    @property
    def counters(self):
        return self.dir + "/" + COUNTERS_NAME

    def certificate(self, filename):
        return self.certificates_dir + "/" + filename

    def crt_list(self, name):
        return self.crt_lists_dir + "/" + name

    def crt_list_names(self):
        try:
            return sorted(n for n in os.listdir(self.crt_lists_dir) if is_crt_list_name(n))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def configured_services(self):
        if self._configured is not None:
            return list(self._configured)
        # os.access: a bare stat, no exception for a missing file (reads of a
        # thousand instances ask this twice each).
        return [s for s in SERVICES if os.access(self.template(s), os.F_OK)]

    def certificate_names(self):
        try:
            return sorted(n for n in os.listdir(self.certificates_dir) if n.endswith(".pem"))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self):
        return bool(any(os.access(self.template(s), os.F_OK) for s in SERVICES)
                    or os.access(self.custom503, os.F_OK) or self.certificate_names()
                or self.crt_list_names())


def scan_instances(state_dir, dir_fd=None):
    """(id, folder path ending in /, configured services) of each instance
    that exists, sorted by id: one pass of bare os calls, for the reads that
    walk every instance (a thousand of them in one request).

    With dir_fd, the instances folder opened by the caller (open_instances_dir),
    each folder is "<id>/", relative to it: every file then costs the kernel
    one path step instead of five."""
    base = instances_dir(state_dir)
    try:
        names = sorted(os.listdir(base if dir_fd is None else dir_fd))
    except FileNotFoundError:
        return []
    prefix = base + "/" if dir_fd is None else ""
    found = []
    access, exists = os.access, os.F_OK
    templates = [(service, TEMPLATE_NAMES[service]) for service in SERVICES]
    for name in names:
        if not is_instance_id(name):
            continue
        folder = prefix + name + "/"
        configured = [service for service, template in templates
                      if access(folder + template, exists, dir_fd=dir_fd)]
        if configured or access(folder + CUSTOM503_NAME, exists, dir_fd=dir_fd) \
                or Instance(state_dir, name).certificate_names() \
                or Instance(state_dir, name).crt_list_names():
            found.append((name, folder, configured))
    return found


def open_instances_dir(state_dir):
    """A descriptor of the instances folder for scan_instances' dir_fd, or
    None when there is no such folder. The caller closes it."""
    try:
        return os.open(instances_dir(state_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def existing_instances(state_dir, snapshot=False):
    """The instances that exist, sorted by id. snapshot=True: each remembers
    its configured services as found now (for read-only views; a change must
    not use one, its files move under it)."""
    instances = []
    for name, _folder, configured in scan_instances(state_dir):
        instance = Instance(state_dir, name)
        if snapshot:
            instance._configured = configured
        instances.append(instance)
    return instances


def instance_ids(state_dir):
    """Ids of the instances that exist, sorted (Instance.exists, inlined: GET
    /instances asks it of every folder)."""
    dir_fd = open_instances_dir(state_dir)
    if dir_fd is None:
        return []
    try:
        haproxy_template = "/" + TEMPLATE_NAMES["haproxy"]
        return sorted(name for name in os.listdir(dir_fd) if is_instance_id(name) and (
            os.access(name + haproxy_template, os.F_OK, dir_fd=dir_fd)
            or Instance(state_dir, name).exists()))
    finally:
        os.close(dir_fd)
