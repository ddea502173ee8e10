"""The one config file: where things live on this machine.

Its path comes from APPLIANCE_API_CONFIG (lighttpd sets it for the CGI).
Every other module asks this one; nothing else reads the file.

The file is INI, read by a small reader here rather than configparser: every
request reads it, and configparser (with the `re` it imports) cost each one
about 2 ms. What it accepts is what configparser accepts with interpolation
off: [section] headers, `key = value` or `key: value` (keys case-insensitive),
whole-line comments starting with # or ;, indented continuation lines;
duplicate sections or keys, and lines outside a section, are errors.
"""
import os

from .errors import ServerError

ENV_VARIABLE = "APPLIANCE_API_CONFIG"
DEFAULT_PATH = "/etc/appliance-api/appliance-api.ini"

# Every key, with its default. A key missing from the file takes this value;
# a key in the file that is not here is a typo, refused at load time.
DEFAULTS = {
    "api": {
        # The appliance's own management address: what {MYIP} becomes.
        "management_address": "127.0.0.1",
        # Defence in depth behind lighttpd: refuse a request whose environment
        # does not show a verified client certificate. Off only for in-process tests.
        "require_client_certificate": "yes",
        # Space-separated client certificate CNs allowed in; empty means any
        # certificate signed by the controller CA.
        "allowed_client_names": "",
        # The API's own certificate and key (lighttpd's ssl.pemfile), which
        # PUT /certificate replaces; lighttpd's pid file, to which it then
        # sends SIGUSR1 (a graceful restart: requests in flight finish).
        "certificate_file": "/etc/appliance-api/pki/server.pem",
        "lighttpd_pid_file": "/run/lighttpd.pid",
        # Space-separated names a new API certificate may name (CN or a
        # subject alternative name) besides management_address and the host
        # name: e.g. the DNS name the controller reaches this appliance by.
        "certificate_names": "",
    },
    "paths": {
        "state_dir": "/var/lib/appliance-api",
    },
    "programs": {
        "haproxy": "/usr/sbin/haproxy",
        "stunnel": "/usr/bin/stunnel4",
        "ip": "/usr/sbin/ip",
        "iptables": "/usr/sbin/iptables",
        "ip6tables": "/usr/sbin/ip6tables",
        "keepalived": "/usr/sbin/keepalived",
        "lighttpd": "/usr/sbin/lighttpd",
    },
    "daemons": {
        # Seconds to wait for a daemon to start or to take a reload.
        "start_timeout": "10",
        # Seconds a soft stop may take before the daemon is killed.
        "stop_timeout": "5",
        # A certificate PUT swaps a certificate haproxy holds in its memory
        # (runtime API) rather than reloading it. Both drop no connection;
        # "no" is for comparison, or if an haproxy's runtime API misbehaves.
        "swap_certificates": "yes",
        # haproxy -c runs as nobody, without network, seeing only a copy of
        # the instance's files (system/confinement.py). Needs root and Linux
        # namespaces; "no" only where those cannot be had.
        "confine_checks": "yes",
    },
    "supervisor": {
        # octctl supervise: starts of a daemon that are free; each further one
        # waits twice as long as the last (1 s, 2 s, ... up to max_delay), until
        # the daemon has run window seconds; seconds between scans for what
        # no pidfd saw.
        "burst": "3",
        "window": "30",
        "max_delay": "60",
        "scan_interval": "1",
    },
    "network": {
        # Put service IPs on the VIP interface and keep accounting rules for them.
        "manage": "yes",
        "vip_interface": "eth1",
        "chain_prefix": "APPLIANCE",
    },
    "ha": {
        # The interface VRRP talks on (empty: the VIP interface). ha_ip and the
        # service IPs always go on the VIP interface.
        "vrrp_interface": "",
        # Unique among the VRRP routers of one network segment.
        "virtual_router_id": "51",
        # Seconds between two health checks of this node's daemons.
        "health_interval": "1",
        # Seconds a topology change may take before it counts as failed.
        "transition_timeout": "30",
        # Adverts a backup misses before it takes over. 3 is the VRRP RFCs'
        # (about 3 s); fewer is faster when the active node dies without a
        # word, and a lost advert or two then moves the addresses needlessly.
        "down_timer_adverts": "3",
    },
    "sync": {
        # The standby's pull from the active node (octctl sync): the CA that
        # signed the nodes' API certificates, this node's own client
        # certificate and key (one PEM, issued by the controller like the
        # API's), the API's port, seconds per request (in all, from connecting
        # to the answer's last byte), seconds per run.
        "ca_file": "/etc/appliance-api/pki/ca.pem",
        "client_certificate": "/etc/appliance-api/pki/sync-client.pem",
        # Space-separated client certificate CNs of this pair's nodes' sync
        # identities (each node's client_certificate): the only clients a
        # GET of a key + certificate file answers with its private key. A
        # controller's CN never belongs here.
        "peer_client_names": "",
        "port": "443",
        "timeout": "5",
        "budget": "60",
        # A run takes away (deletes, or leaves without a config) at most this
        # share of the node's instances, and one instance always; more, or
        # a manifest listing no instance while this node holds some, is
        # refused until `octctl sync --allow-mass-delete`.
        "max_delete_share": "0.25",
        # A bigger manifest is refused unread: 16 KiB an instance (its three
        # digests and about 50 certificates with the longest names) for
        # 1,000 instances. Raise it for a node holding more.
        "max_manifest_bytes": "16777216",
    },
    "status": {
        # Interfaces whose traffic /status reports: names, or "all" for every
        # interface but loopback.
        "network_interfaces": "eth0",
        # A file holding "active" or "standby"; missing means a single, active node.
        "role_file": "",
        # Either a pid file or a command (run without a shell) whose health
        # is the fencing daemon's status; neither means "OK".
        "fencing_pid_file": "",
        "fencing_command": "",
    },
    "stats": {
        # Seconds a read of one haproxy's master CLI may wait for its answer
        # (GET /instances/:instance/stats, /metrics, and the counters a reload
        # or stop keeps). Sockets are read at once: a /metrics scrape takes at
        # most twice this (current workers, then draining old ones), however
        # many tenants do not answer.
        "cli_timeout": "0.4",
    },
    "limits": {
        "config_bytes": "1048576",
        "certificate_bytes": "262144",
        "custom503_bytes": "16384",
        "crt_list_bytes": "65536",
        # Changes (PUT, DELETE) that may run at once, appliance-wide: each holds
        # a Python process with cryptography or psutil loaded (about 25 MB).
        # One over the cap waits up to change_wait seconds for a slot, then is
        # answered 503 with Retry-After, having changed nothing. Reads are not capped.
        "concurrent_changes": "4",
        "change_wait": "2",
    },
    "testing": {
        # Seconds between writing a file and renaming it into place, so that
        # crash tests can kill a request mid-write. Never set on an appliance.
        "pause_before_rename": "0",
    },
}


class Config:
    def __init__(self, values, path):
        self.path = path
        self._values = values  # {section: {key: value}}, every key of DEFAULTS

    def get(self, section, key):
        return self._values[section][key]

    def flag(self, section, key):
        value = self._values[section][key].lower()
        if value not in BOOLEANS:
            raise ValueError("Not a boolean: %s" % value)
        return BOOLEANS[value]

    def number(self, section, key):
        return float(self._values[section][key])

    def words(self, section, key):
        return self._values[section][key].split()

    @property
    def state_dir(self):
        return self._values["paths"]["state_dir"]


# configparser's words for true and false.
BOOLEANS = {"1": True, "yes": True, "true": True, "on": True,
            "0": False, "no": False, "false": False, "off": False}


def parse(text, path="<string>"):
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    try:
        found = read_ini(text)
    except ValueError as error:
        raise ServerError("Configuration file %s is invalid: %s" % (path, error))
    for section, keys in found.items():
        if section not in DEFAULTS:
            raise ServerError("Configuration file %s: unknown section [%s]" % (path, section))
        unknown = set(keys) - set(DEFAULTS[section])
        if unknown:
            raise ServerError("Configuration file %s: unknown key %s in [%s]"
                              % (path, ", ".join(sorted(unknown)), section))
        values[section].update(keys)
    config = Config(values, path)
    try:
        for section, keys in DEFAULTS.items():
            for key, default in keys.items():
                if default in ("yes", "no"):
                    config.flag(section, key)
                elif default.isdigit():
                    config.number(section, key)
                elif default.replace(".", "", 1).isdigit():  # a share, 0 to 1
                    if not 0 <= config.number(section, key) <= 1:
                        raise ValueError("[%s] %s: %s is not between 0 and 1" % (
                            section, key, config.get(section, key)))
    except ValueError as error:
        raise ServerError("Configuration file %s is invalid: %s" % (path, error))
    return config


def read_ini(text):
    """{section: {key: value}}; ValueError naming the line for anything else."""
    sections, section, key, key_indent = {}, None, None, 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(line) - len(line.lstrip())
        if key is not None and indent > key_indent:
            section[key] += "\n" + stripped  # a continuation of the value above
            continue
        if stripped.startswith("["):
            name = stripped[1:stripped.find("]")] if "]" in stripped else None
            if not name:
                raise ValueError("line %d: %r is not a section header" % (number, stripped))
            if name in sections:
                raise ValueError("line %d: section [%s] again" % (number, name))
            section, key = sections.setdefault(name, {}), None
            continue
        if section is None:
            raise ValueError("line %d: %r comes before any [section]" % (number, stripped))
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut <= 0 or not line[:cut].strip():
            raise ValueError("line %d: %r is not `key = value`" % (number, stripped))
        key, key_indent = line[:cut].strip().lower(), indent
        if key in section:
            raise ValueError("line %d: %s given twice" % (number, key))
        section[key] = line[cut + 1:].strip()
    return sections


def load(environ=None):
    environ = os.environ if environ is None else environ
    path = environ.get(ENV_VARIABLE) or DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ServerError("Configuration file %s is not readable: %s"
                          % (path, getattr(error, "strerror", None) or error))
    return parse(text, path)


