"""What a rendered config asks of the appliance, read strictly: the TCP
listeners it opens and the files it names.

The API must know for certain where a config listens (to refuse a port
another instance holds, and to put its service IPs on the VIP interface)
and which files it reads (to keep it inside its own instance folder, and to
know when a certificate is in use). Rather than resolve every spelling the
daemons accept (host names, quoting, environment variables), the rule is
simple: a listener is a literal address, and anything else on a listening
line is refused with a 409 that names the line.

    haproxy `bind` (any section) and `stats socket` on an address:
        ADDR:PORT[-PORT] with ADDR an IPv4 literal, [IPv6] (or bare IPv6),
        `*`, or empty; an optional ipv4@ ipv6@ tcp@ tcp4@ tcp6@ prefix;
        unix sockets (`/path`, `unix@/path`, `abns@name`) open no TCP port.
    stunnel `accept`: [ADDR:]PORT with ADDR as above.

{MYIP} is already a literal in the rendered text. Quotes, escapes and
variables are refused on those lines, since they change what the line means.
"""
import ipaddress
import os
import re

from .errors import Conflict
from .layout import MANAGED_NAMES

TCP_PREFIXES = ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@")
SOCKET_PREFIXES = ("unix@", "abns@")
# haproxy keywords after which a bind or server line names a file, and the
# base (crt-base or ca-base) that a relative one is read from.
HAPROXY_FILE_OPTIONS = {"crt": "crt-base", "crt-list": "crt-base", "ca-file": "ca-base",
                        "crl-file": "ca-base", "ca-verify-file": "ca-base",
                        "ca-sign-file": "ca-base", "ssl-dh-param-file": None}
STUNNEL_FILE_OPTIONS = ("cert", "key", "cafile", "capath", "crlfile", "crlpath", "include")
# What would let a tenant's config run programs as root, or change how the
# daemon resolves paths behind the API's back: refused outright.
REFUSED_HAPROXY_KEYWORDS = {
    "program": "runs a program as root",
    "command": "runs a program as root",
    "external-check": "runs a program as root",
    "lua-load": "loads code", "lua-load-per-thread": "loads code", "lua-prepend-path": "loads code",
    "default-path": "changes how relative paths are read",
    "setenv": "sets variables that paths could use",
    "presetenv": "sets variables that paths could use",
    "resetenv": "changes the daemon's environment",
    "unsetenv": "changes the daemon's environment",
    "chroot": "moves the daemon's file system root",
}
REFUSED_STUNNEL_OPTIONS = {"exec": "runs a program as root", "execargs": "runs a program as root",
                           "chroot": "moves the daemon's file system root"}
# Outside the instance folder, a file option may name only these (read-only
# system files: the syslog socket, the system CA bundle).
SYSTEM_PATHS = ("/dev/log", "/dev/null", "/etc/ssl/certs/", "/usr/share/ca-certificates/",
                "/usr/lib/ssl/certs/", "/etc/pki/tls/certs/")


def fill(template, instance_dir, management_address):
    """The template with {MYIP} and {INSTANCE_DIR} filled in: what runs, but
    for the options a daemon adds of its own (stunnel's pid and log)."""
    return (template.replace("{MYIP}", management_address)
                    .replace("{INSTANCE_DIR}", os.path.abspath(instance_dir)))


class Listener:
    """A TCP listener: address (an ip_address, or None for every address) and a port range."""

    def __init__(self, address, ports, line_number):
        self.address = address
        self.ports = ports
        self.line_number = line_number
        self.is_service = True  # False for a peers section's address

    def overlaps(self, other):
        """Whether two listeners would share a port. haproxy binds with
        SO_REUSEPORT, so such a pair would not fail: it would split the traffic."""
        same_address = self.address is None or other.address is None \
            or self.address == other.address
        return same_address and self.ports.start < other.ports.stop \
            and other.ports.start < self.ports.stop

    def service_ip(self, management_address):
        """The address as a service IP, or None (wildcard, loopback, the management address)."""
        if not self.is_service or self.address is None or self.address.is_loopback \
                or str(self.address) == management_address:
            return None
        return str(self.address)

    def __str__(self):
        host = "*" if self.address is None else (
            "[%s]" % self.address if self.address.version == 6 else str(self.address))
        port = str(self.ports.start) if len(self.ports) == 1 else "%d-%d" % (
            self.ports.start, self.ports.stop - 1)
        return "%s:%s" % (host, port)


class Scan:
    """One rendered config, read: its listeners and the files it names."""

    def __init__(self, service, text, instance_dir):
        self.service = service
        self.instance_dir = os.path.abspath(instance_dir)
        self.listeners = []
        self.files = []  # (line number, absolute normalised path) of file options
        self._path_words = []  # the same for every word with a slash in it
        self.problems = []  # "line N: ..." for each line refused
        reader = _scan_haproxy if service == "haproxy" else _scan_stunnel
        reader(self, text)

    def refuse(self, line_number, line, why):
        self.problems.append("line %d: %s: %s" % (line_number, line.strip()[:200], why))

    def service_ips(self, management_address):
        return {ip for ip in (l.service_ip(management_address) for l in self.listeners) if ip}

    def names_file(self, path):
        """Whether the config reads path: that file, or a folder holding it."""
        path = os.path.normpath(os.path.abspath(path))
        return any(path == named or path.startswith(named.rstrip("/") + "/")
                   for _line, named in self.files)

    def check(self, state_dir):
        """Conflict (409, one line per problem) unless every listener is certain and
        every file the config names is outside the state folder or inside this
        instance's own folder, and not one of the API's own files there."""
        problems = list(self.problems)
        problems += self._foreign_files(state_dir)
        if problems:
            raise Conflict("Invalid configuration", "\n".join(problems))

    def _foreign_files(self, state_dir):
        roots = {os.path.normpath(os.path.abspath(state_dir)), os.path.realpath(state_dir)}
        own = {self.instance_dir, os.path.realpath(self.instance_dir)}
        found = []
        file_options = set(self.files)
        for line_number, path in self._paths_named():
            inside_own = [d for d in own if path == d or path.startswith(d + "/")]
            if inside_own:
                first = path[len(inside_own[0]) + 1:].split("/")[0]
                if first in MANAGED_NAMES:
                    found.append("line %d: %s is the API's own file; a config may not name it"
                                 % (line_number, path))
            elif any(path == root or path.startswith(root + "/") for root in roots):
                found.append("line %d: %s is outside this instance's folder (a config may name "
                             "files in {INSTANCE_DIR} and outside the state folder only)"
                             % (line_number, path))
            elif (line_number, path) in file_options and not (
                    path in SYSTEM_PATHS or path.startswith(
                        tuple(p for p in SYSTEM_PATHS if p.endswith("/")))):
                # A file the daemon reads (a key, a socket it creates): only the
                # instance's own or a read-only system file, never the
                # appliance's (its API key, its sync client certificate).
                found.append("line %d: %s is outside this instance's folder (files a daemon "
                             "reads or creates must be in {INSTANCE_DIR}, or be /dev/log or "
                             "the system CA certificates)" % (line_number, path))
        return found

    def _paths_named(self):
        """Every path-like word of the config (anything with a slash), made
        absolute against the instance folder (the daemons' working folder),
        plus the files resolved from file options."""
        yield from self.files
        yield from self._path_words


def _scan_haproxy(scan, text):
    crt_base = ca_base = None
    section = None
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = haproxy_words(line)
        except ValueError as error:
            scan.refuse(number, line, str(error))
            continue
        if not words:
            continue
        for word, _plain in words:
            for piece in re.split(r"[,=]", word):
                piece = piece.split("@", 1)[1] if "@" in piece.split("/")[0] else piece
                if "/" in piece:
                    scan._path_words.append((number, _absolute(piece, scan.instance_dir)))
        keyword = words[0][0]
        arguments = [w for w, _ in words[1:]]
        if keyword in REFUSED_HAPROXY_KEYWORDS:
            scan.refuse(number, line, "%s %s: not allowed in a tenant's config"
                        % (keyword, REFUSED_HAPROXY_KEYWORDS[keyword]))
            continue
        if "external-check" in arguments:
            scan.refuse(number, line, "external-check runs a program as root: not allowed in "
                        "a tenant's config")
        if keyword in ("peer", "server") and len(words) >= 3 and section == "peers":
            # The local peer listens on its address: a listener like a bind.
            _haproxy_endpoints(scan, number, line, [words[2]], service_ip=False)
        if keyword in ("frontend", "backend", "listen", "defaults", "global", "peers",
                       "resolvers", "userlist", "mailers", "cache", "ring", "program",
                       "http-errors", "fcgi-app"):
            section = keyword
        for index, (word, plain) in enumerate(words[1:], 1):
            if not plain and "$" in word and "/" in word:
                scan.refuse(number, line, "variables are not allowed in a path")
        file_words = {"errorfile": 2, "pidfile": 1, "crt-base": 1, "ca-base": 1}
        if keyword in file_words and len(arguments) >= file_words[keyword]:
            scan.files.append((number, _absolute(arguments[file_words[keyword] - 1],
                                                 scan.instance_dir)))
        if keyword == "stats" and len(arguments) >= 2 and arguments[0] == "socket" \
                and (arguments[1].startswith("/") or arguments[1].startswith("unix@")):
            scan.files.append((number, _absolute(arguments[1].split("@", 1)[-1],
                                                 scan.instance_dir)))
        if keyword == "log" and arguments and arguments[0].startswith("/"):
            scan.files.append((number, _absolute(arguments[0], scan.instance_dir)))
        if keyword == "crt-base" and arguments:
            crt_base = _absolute(arguments[0], scan.instance_dir)
        elif keyword == "ca-base" and arguments:
            ca_base = _absolute(arguments[0], scan.instance_dir)
        for index, option in enumerate(arguments[:-1]):
            if option == "file" and keyword in ("http-request", "http-response", "http-after-response"):
                scan.files.append((number, _absolute(arguments[index + 1], scan.instance_dir)))
            if option in HAPROXY_FILE_OPTIONS:
                base = {"crt-base": crt_base, "ca-base": ca_base}.get(
                    HAPROXY_FILE_OPTIONS[option]) or scan.instance_dir
                scan.files.append((number, _absolute(arguments[index + 1], base)))
        if keyword == "bind":
            _haproxy_bind(scan, number, line, words)
        elif keyword == "stats" and len(words) >= 3 and words[1][0] == "socket":
            _haproxy_endpoints(scan, number, line, [words[2]], stats=True)


def _haproxy_bind(scan, number, line, words):
    if len(words) < 2:
        return
    _haproxy_endpoints(scan, number, line, [words[1]])


def _haproxy_endpoints(scan, number, line, words, stats=False, service_ip=True):
    for text, plain in words:
        if not plain:
            scan.refuse(number, line, "quotes, escapes and variables are not allowed in a "
                        "listening address")
            return
        for endpoint in text.split(","):
            if endpoint.startswith("/") or endpoint.startswith(SOCKET_PREFIXES):
                path = endpoint.split("@", 1)[-1]
                if not endpoint.startswith("abns@"):  # a unix socket: a file the daemon makes
                    scan.files.append((number, _absolute(path, scan.instance_dir)))
                continue
            _add_listener(scan, number, line, endpoint, endpoint, "address:port", service_ip)


def _scan_stunnel(scan, text):
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith((";", "#", "[")) or "=" not in stripped:
            continue
        key, value = (part.strip() for part in stripped.split("=", 1))
        key = key.lower()
        if key in REFUSED_STUNNEL_OPTIONS:
            scan.refuse(number, line, "%s %s: not allowed in a tenant's config"
                        % (key, REFUSED_STUNNEL_OPTIONS[key]))
            continue
        if "/" in value:
            scan._path_words.append((number, _absolute(value, scan.instance_dir)))
        if key in STUNNEL_FILE_OPTIONS:
            if not value.startswith("/"):
                # stunnel reads a relative path against its working folder,
                # which is / once it has forked: say it plainly.
                scan.refuse(number, line, "use an absolute path ({INSTANCE_DIR}/certificates/...)")
            else:
                scan.files.append((number, _absolute(value, scan.instance_dir)))
        elif key == "accept":
            endpoint = value if ":" in value else ":" + value
            _add_listener(scan, number, line, endpoint, value, "[address:]port")


def _add_listener(scan, number, line, endpoint, as_written, form, service_ip=True):
    listener = parse_endpoint(endpoint, number)
    if listener is None:
        scan.refuse(number, line, "%s is not a literal %s (use an IP address, [IPv6], * or "
                    "{MYIP}; host names are refused)" % (as_written, form))
    else:
        listener.is_service = service_ip
        scan.listeners.append(listener)


def parse_endpoint(endpoint, line_number=0):
    """A Listener for "ADDR:PORT", "[ADDR]:PORT", "ipv4@ADDR:PORT", ":PORT",
    "*:PORT", "ADDR:LOW-HIGH"; None for anything else (host names included)."""
    for prefix in TCP_PREFIXES:
        if endpoint.startswith(prefix):
            endpoint = endpoint[len(prefix):]
            break
    host, separator, port = endpoint.rpartition(":")
    if not separator:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if "%" in host:
        return None  # a scope: any text at all would follow into iptables and keepalived
    try:
        address = None if host in ("", "*") else ipaddress.ip_address(host)
        if address is not None and address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped  # the same socket as the IPv4 one
        first, _dash, last = port.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        ports = range(int(first), int(last or first) + 1)
    except ValueError:
        return None
    if not ports or ports.stop > 65536:
        return None
    if address is not None and address.is_unspecified:
        address = None
    return Listener(address, ports, line_number)


def haproxy_words(line):
    """The words of one haproxy config line, as haproxy 2.6 splits them:
    [(text, plain)], plain False for a word with quotes, escapes or $variables.
    Comments (#) end the line. ValueError for an unterminated quote."""
    words, current, plain, quote, index = [], None, True, None, 0
    while index < len(line):
        char = line[index]
        if quote is None and char in " \t":
            if current is not None:
                words.append((current, plain))
                current, plain = None, True
        elif quote is None and char == "#":
            break
        else:
            current = current or ""
            if char == "\\" and quote != "'" and index + 1 < len(line):
                plain = False
                index += 1
                current += line[index]
            elif char in "\"'" and quote in (None, char):
                plain = False
                quote = None if quote else char
            elif char == "$" and quote != "'":
                plain = False
                current += char
            else:
                current += char
        index += 1
    if quote:
        raise ValueError("unterminated quote")
    if current is not None:
        words.append((current, plain))
    return words


def _absolute(path, base):
    """path normalised the way the kernel would resolve it (// and .. folded),
    a relative one read against base."""
    if not path.startswith("/"):
        path = os.path.join(base, path)
    return os.path.normpath(path)
