"""The one config file: where things live on this machine.

Its path comes from APPLIANCE_API_CONFIG (lighttpd sets it for the CGI).
Every other module asks this one; nothing else reads the file.
"""
import configparser
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
    },
    "daemons": {
        # Seconds to wait for a daemon to start or to take a reload.
        "start_timeout": "10",
        # Seconds a soft stop may take before the daemon is killed.
        "stop_timeout": "5",
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
        # API's), the API's port, seconds per request, seconds per run.
        "ca_file": "/etc/appliance-api/pki/ca.pem",
        "client_certificate": "/etc/appliance-api/pki/sync-client.pem",
        "port": "443",
        "timeout": "5",
        "budget": "60",
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
    "limits": {
        "config_bytes": "1048576",
        "certificate_bytes": "262144",
        "custom503_bytes": "16384",
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
    def __init__(self, parser, path):
        self.path = path
        self._parser = parser

    def get(self, section, key):
        return self._parser.get(section, key)

    def flag(self, section, key):
        return self._parser.getboolean(section, key)

    def number(self, section, key):
        return self._parser.getfloat(section, key)

    def words(self, section, key):
        return self._parser.get(section, key).split()

    @property
    def state_dir(self):
        return self._parser.get("paths", "state_dir")


def parse(text, path="<string>"):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(DEFAULTS)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as error:
        raise ServerError("Configuration file %s is invalid: %s" % (path, _one_line(error)))
    for section in parser.sections():
        if section not in DEFAULTS:
            raise ServerError("Configuration file %s: unknown section [%s]" % (path, section))
        unknown = set(parser[section]) - set(DEFAULTS[section])
        if unknown:
            raise ServerError("Configuration file %s: unknown key %s in [%s]"
                              % (path, ", ".join(sorted(unknown)), section))
    config = Config(parser, path)
    try:
        for section, keys in DEFAULTS.items():
            for key, default in keys.items():
                if default in ("yes", "no"):
                    config.flag(section, key)
                elif default.isdigit():
                    config.number(section, key)
    except ValueError as error:
        raise ServerError("Configuration file %s is invalid: %s" % (path, error))
    return config


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


def _one_line(error):
    return " ".join(str(error).split())
