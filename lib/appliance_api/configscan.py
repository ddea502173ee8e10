r"""What a rendered config asks of the appliance, read strictly: the TCP
listeners it opens and the files it names.

The API must know for certain where a config listens (to refuse a port
another instance holds, and to put its service IPs on the VIP interface)
and which files it reads or creates (to keep it inside its own instance
folder, and to know when a certificate is in use). The scan runs before any
daemon sees the text, and reads each line as the daemon will:

- haproxy: words as haproxy 2.6's parse_line() makes them (quotes, the
  backslash escapes \\ \  \# \' \" \t \n \r \xHH, # comments; a line ends
  at LF, CR or NUL). What the scan cannot read exactly as haproxy does is
  refused with a 409 that names the line: environment references ("$NAME",
  "${NAME-default}", which haproxy expands inside double quotes), the
  .if/.elif/.else/.endif and .diag-style directives, [scope] lines, control
  characters, and a NUL made by an escape.
- stunnel 5.68: `key = value` lines (keys case-insensitive), ; and # comments;
  it expands no variables (checked: "${PORT}" stays literal). `include`,
  which reads configuration the scan never saw, is refused.

Listeners must be literal:

    haproxy `bind` (any section) and `stats socket` on an address:
        ADDR:PORT[-PORT] with ADDR an IPv4 literal, [IPv6] (or bare IPv6),
        `*`, or empty; an optional ipv4@ ipv6@ tcp@ tcp4@ tcp6@ prefix;
        unix sockets (`/path`, `unix@/path`) open no TCP port.
    stunnel `accept`: [ADDR:]PORT with ADDR as above.

Every file a daemon reads or creates is resolved as the daemon resolves it
(crt-base, ca-base, key-base, the instance folder as working folder, ..
and symbolic links as the kernel follows them) and judged by what it is for
(FILE_RULES): TLS material only from the instance's certificates folder or
the system CA certificates; pages only the instance's own (the 503 page) or
Debian's haproxy error pages; sockets, pid files, maps and state files only
in the instance folder, never on one of the API's own files.

{MYIP} is already a literal in the rendered text.
"""
import ipaddress
import os
import re

from .configread import HAPROXY_SECTIONS, haproxy_words, stunnel_line
from .errors import Conflict
from .layout import (CERTIFICATES_NAME, CRT_LISTS_NAME, CUSTOM503_NAME, MANAGED_NAMES,
                     is_crt_list_name)

TCP_PREFIXES = ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@")
SOCKET_PREFIXES = ("unix@", "abns@")
# haproxy options (on bind, server and default-server lines) that name TLS
# material, and the base (crt-base, ca-base) a relative one is read from.
HAPROXY_TLS_OPTIONS = {"crt": "crt-base", "ca-file": "ca-base", "crl-file": "ca-base",
                       "ca-verify-file": "ca-base", "ca-sign-file": "ca-base",
                       "tls-ticket-keys": None}
# Global keywords whose one argument is TLS material (a file or a folder of it).
HAPROXY_TLS_KEYWORDS = ("ca-base", "crt-base", "key-base", "ssl-dh-param-file",
                        "issuers-chain-path", "httpclient.ssl.ca-file")
# Keywords whose argument (by position) is a file the daemon reads or writes
# for itself: kept in the instance folder.
HAPROXY_PRIVATE_FILE_KEYWORDS = {"pidfile": 1, "server-state-file": 1, "server-state-base": 1,
                                 "server-state-file-name": 1, "h1-case-adjust-file": 1,
                                 "backing-file": 1}
# Rule actions that answer with a file's content.
HAPROXY_PAGE_RULES = ("http-request", "http-response", "http-after-response", "http-error")
HAPROXY_PAGE_OPTIONS = ("file", "lf-file", "errorfile")
# jwt_verify(<alg>,<key or certificate file>), read at start.
HAPROXY_JWT_FILE = re.compile(r"(?:^|[^A-Za-z0-9_.-])jwt_verify\([^,)]*,([^,)]*)")
# Converters and actions whose first argument is a map or ACL file, loaded at start.
HAPROXY_PATTERN_FILE = re.compile(r"(?:^|[^A-Za-z0-9_.-])((?:map|set-map|del-map|add-acl|del-acl)"
                                  r"(?:_[a-z0-9_]+)?)\(([^,)]*)")
# Lines whose address word (by position) may be a socket the daemon connects to.
HAPROXY_CONNECTING = {"server": 2, "server-template": 3, "peer": 2, "mailer": 2,
                      "nameserver": 2, "log": 1, "dispatch": 1}
# Options whose next word is an address haproxy connects to or from
# (tcp-check/http-check connect addr, server check addr, socks4, source).
HAPROXY_ADDRESS_OPTIONS = ("addr", "source", "socks4", "usesrc")
# Address prefixes of haproxy 2.6: a unix socket's path follows the first
# three; the others are refused wherever they stand (an inherited descriptor,
# or an abstract socket every instance shares).
UNIX_PREFIXES = ("unix@", "uxst@", "uxdg@")
REFUSED_PREFIXES = ("abns@", "fd@", "sockpair@")
UDP_PREFIXES = ("udp@", "udp4@", "udp6@")
# What may stand before an address's family and changes nothing of where it goes.
SOCKET_TYPE_PREFIXES = ("stream+", "dgram+", "quic+")
STUNNEL_TLS_OPTIONS = ("cert", "key", "cafile", "capath", "crlfile", "crlpath", "pskSecrets")
STUNNEL_PRIVATE_OPTIONS = ("pid", "output", "rndfile", "egd")
STUNNEL_CONNECTING = ("connect", "redirect")
# What would let a tenant's config run programs as root, or change how the
# daemon resolves paths behind the API's back: refused outright.
REFUSED_HAPROXY_KEYWORDS = {
    "program": "runs a program as root",
    "command": "runs a program as root",
    "external-check": "runs a program as root",
    "insecure-fork-wanted": "lets the daemon run programs",
    "insecure-setuid-wanted": "lets the daemon run programs",
    "lua-load": "loads code", "lua-load-per-thread": "loads code", "lua-prepend-path": "loads code",
    "ssl-engine": "loads code", "ssl-provider": "loads code", "ssl-provider-path": "loads code",
    "default-path": "changes how relative paths are read",
    "unix-bind": "changes how socket paths are read",
    "setenv": "sets variables that paths could use",
    "presetenv": "sets variables that paths could use",
    "resetenv": "changes the daemon's environment",
    "unsetenv": "changes the daemon's environment",
    "chroot": "moves the daemon's file system root",
}
# Options refused wherever they stand on a line.
REFUSED_HAPROXY_OPTIONS = {
    "external-check": "runs a program as root",
    "namespace": "moves the socket into another network namespace",
    "opentracing": "loads code (its config names a plugin)",
}
REFUSED_STUNNEL_OPTIONS = {"exec": "runs a program as root", "execargs": "runs a program as root",
                           "pty": "runs a program as root",
                           "engine": "loads code", "engineid": "loads code",
                           "enginenum": "loads code", "enginectrl": "loads code",
                           "enginedefault": "loads code",
                           "include": "reads configuration the API has not checked",
                           "config": "runs OpenSSL configuration commands, which read files "
                                     "(use the named options)",
                           "libwrap": "reads the machine's /etc/hosts.allow and hosts.deny",
                           "chroot": "moves the daemon's file system root"}
# Read-only system files a config may name outside its instance folder, by
# what it uses them for. A folder ends with /.
SYSTEM_CA_PATHS = ("/etc/ssl/certs/", "/usr/share/ca-certificates/", "/usr/lib/ssl/certs/",
                   "/etc/pki/tls/certs/")
SYSTEM_PAGE_PATHS = ("/etc/haproxy/errors/", "/dev/null")
SYSTEM_SOCKETS = ("/dev/log",)
# What a file reference is for, and where it may point (see Scan.check).
TLS, PAGE, PRIVATE, SOCKET, CONNECT, CRT_LIST = "TLS material", "a page", "a file", \
    "a socket", "a socket to connect to", "a crt-list"

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
        self.references = []  # (line number, absolute normalised path, what it is for)
        self._path_words = []  # (line number, path) for every other word with a slash in it
        self.problems = []  # "line N: ..." for each line refused
        self.section = None  # the haproxy section being read
        self.bases = {}  # crt-base, ca-base and key-base as read so far
        reader = _scan_haproxy if service == "haproxy" else _scan_stunnel
        for number, line in enumerate(text.split("\n"), 1):
            why = _unreadable_characters(line)
            if why:
                self.refuse(number, line, why)
            else:
                reader(self, number, line.rstrip("\r"))

    @property
    def files(self):
        """(line number, path) of every file the config names for a daemon."""
        return [(number, path) for number, path, _purpose in self.references]

    def refuse(self, line_number, line, why):
        shown = "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256
                        else "\\u%04x" % ord(c) for c in line.strip()[:200])
        self.problems.append("line %d: %s: %s" % (line_number, shown, why))

    def refer(self, line_number, path, purpose, base=None):
        self.references.append((line_number, _absolute(path, base or self.instance_dir),
                                purpose))

    def service_ips(self, management_address):
        return {ip for ip in (l.service_ip(management_address) for l in self.listeners) if ip}

    def names_file(self, path):
        """Whether the config reads path: that file, or a folder holding it."""
        path = os.path.normpath(os.path.abspath(path))
        return any(path == named or path.startswith(named.rstrip("/") + "/")
                   for _line, named in self.files)

    def check(self, state_dir):
        """Conflict (409, one line per problem) unless every line was read with
        certainty, every listener is literal, and every file the config names
        is where FILE_RULES lets it be for what it is."""
        problems = list(self.problems)
        problems += self._foreign_files(state_dir)
        if problems:
            raise Conflict("Invalid configuration", "\n".join(problems))

    def _foreign_files(self, state_dir):
        roots = _both(state_dir)
        own = _both(self.instance_dir)
        found = []
        for line_number, path, purpose in self.references:
            why = _misplaced(path, purpose, own)
            if why:
                found.append("line %d: %s is %s; %s" % (line_number, path, why,
                                                          FILE_RULES[purpose]))
        for line_number, path in self._path_words:
            for candidate in _both(path):
                inside_own = [d for d in own if _inside(candidate, d)]
                if inside_own:
                    if _first_name(candidate, inside_own[0]) in MANAGED_NAMES:
                        found.append("line %d: %s is the API's own file; a config may not "
                                     "name it" % (line_number, path))
                        break
                elif any(_inside(candidate, root) for root in roots):
                    found.append("line %d: %s is outside this instance's folder (a config may "
                                 "name files in {INSTANCE_DIR} and outside the state folder "
                                 "only)" % (line_number, path))
                    break
        return found


# Where a file may be, by what the daemon does with it; the 409's advice.
FILE_RULES = {
    TLS: "TLS material must be in {INSTANCE_DIR}/certificates/ or among the system CA "
         "certificates (/etc/ssl/certs/)",
    PAGE: "a page must be {INSTANCE_DIR}/custom503.http or one of /etc/haproxy/errors/",
    PRIVATE: "files a daemon reads or writes for itself must be in {INSTANCE_DIR}, not on "
             "one of the API's own files, the 503 page or the certificates",
    SOCKET: "a socket must be in {INSTANCE_DIR}, not on one of the API's own files, the 503 "
            "page or the certificates",
    CRT_LIST: "a crt-list must be {INSTANCE_DIR}/crt-lists/<name>, as the API stores it "
              "(PUT /instances/:instance/crt-lists/:name)",
    CONNECT: "a tenant's daemons connect to no unix socket but /dev/log, to log (use TCP, "
             "e.g. 127.0.0.1:PORT: a runtime API or the master CLI relayed to the network "
             "would hand the daemon over)",
}


def _misplaced(path, purpose, own):
    """Why path may not serve purpose (None when it may): judged on the path as
    written and as the kernel resolves it (symbolic links), both."""
    if purpose == CONNECT:
        # /dev/log as written: under systemd it is a link into /run.
        return None if os.path.normpath(path) in SYSTEM_SOCKETS else "a socket to connect to"
    if purpose == CRT_LIST:
        return _misplaced_crt_list(path, own)
    for candidate in _both(path):
        inside = [d for d in own if _inside(candidate, d)]
        if inside:
            first = _first_name(candidate, inside[0])
            if first in MANAGED_NAMES:
                return "the API's own file"
            if purpose == TLS and first != CERTIFICATES_NAME:
                return "not in the instance's certificates folder"
            if purpose == PAGE and first != CUSTOM503_NAME:
                return "not the instance's 503 page"
            if purpose in (PRIVATE, SOCKET) and first in (CUSTOM503_NAME, CERTIFICATES_NAME,
                                                          CRT_LISTS_NAME, ""):
                return "a file the API keeps for the instance"
            continue
        system = {TLS: SYSTEM_CA_PATHS, PAGE: SYSTEM_PAGE_PATHS}.get(purpose, ())
        if not any(candidate == p.rstrip("/") or (p.endswith("/") and candidate.startswith(p))
                   for p in system):
            return "outside this instance's folder"
    return None


def _misplaced_crt_list(path, own):
    """Why path is not one of the instance's stored crt-lists (None when it
    is), as written and as the kernel resolves it. Only those: haproxy reads
    the certificate paths in a crt-list, which only the API has checked."""
    for candidate in _both(path):
        folder, name = os.path.split(candidate)
        if not any(folder == d + "/" + CRT_LISTS_NAME for d in own) \
                or not is_crt_list_name(name):
            return "not one of the instance's crt-lists"
    return None


def _both(path):
    """path normalised as written, and as the kernel resolves it."""
    written = os.path.normpath(os.path.abspath(path))
    return [written] if os.path.realpath(written) == written else [
        written, os.path.realpath(written)]


def _inside(path, folder):
    return path == folder or path.startswith(folder + "/")


def _first_name(path, folder):
    return path[len(folder) + 1:].split("/")[0]


def _unreadable_characters(line):
    """Why the scan will not read line (control characters the daemons read
    differently from Python: haproxy ends a line at NUL or CR and splits words
    at VT and FF), or None. A CR at the end (a CRLF file) is fine."""
    for index, char in enumerate(line):
        if (char < " " and char != "\t" or char == "\x7f") and not (
                char == "\r" and index == len(line) - 1):
            return "control character %r: not allowed in a config" % char
        if char in "\x85\u2028\u2029":
            return "line separator %r: not allowed in a config" % char
        if char == "\ufeff":
            # stunnel strips one at the start of its file, haproxy does not.
            return "byte-order mark: not allowed in a config"
    return None


def _scan_haproxy(scan, number, line):
    try:
        words = haproxy_words(line)
    except ValueError as error:
        scan.refuse(number, line, str(error))
        return
    if not words:
        return
    texts = [w for w, _ in words]
    if line.lstrip().startswith("["):
        scan.refuse(number, line, "a [scope] line: not allowed in a tenant's config")
        return
    if texts[0].startswith("."):
        scan.refuse(number, line, "%s: conditional blocks and messages are not allowed in a "
                    "tenant's config" % texts[0])
        return
    # "no" and "default" prefix a keyword (no option ..., default option ...).
    keyword_at = 1 if texts[0] in ("no", "default") and len(texts) > 1 else 0
    keyword = texts[keyword_at]
    arguments = texts[keyword_at + 1:]
    if keyword in REFUSED_HAPROXY_KEYWORDS:
        scan.refuse(number, line, "%s %s: not allowed in a tenant's config"
                    % (keyword, REFUSED_HAPROXY_KEYWORDS[keyword]))
        return
    for option in arguments:
        if option in REFUSED_HAPROXY_OPTIONS:
            scan.refuse(number, line, "%s %s: not allowed in a tenant's config"
                        % (option, REFUSED_HAPROXY_OPTIONS[option]))
            return
    if keyword in HAPROXY_SECTIONS:
        scan.section = keyword
    makes_sockets = keyword in ("bind", "dgram-bind") or (
        keyword == "stats" and arguments[:1] == ["socket"])
    for word in texts[keyword_at + 1:]:
        for piece in re.split(r"[,=]", word):
            while piece.startswith(SOCKET_TYPE_PREFIXES):
                piece = piece.split("+", 1)[1]
            if piece.startswith(REFUSED_PREFIXES):
                scan.refuse(number, line, "%s: descriptors and abstract sockets are not "
                            "allowed in a tenant's config (use unix@{INSTANCE_DIR}/name)"
                            % piece.split("@")[0])
                return
            if piece.startswith(UNIX_PREFIXES):
                scan.refer(number, piece.split("@", 1)[1], SOCKET if makes_sockets else CONNECT)
            piece = piece.split("@", 1)[1] if "@" in piece.split("/")[0] else piece
            if "/" in piece:
                scan._path_words.append((number, _absolute(piece, scan.instance_dir)))
        for _name, path in HAPROXY_PATTERN_FILE.findall(word):
            if set(path) & set("'\"\\ \t"):
                scan.refuse(number, line, "%s: a quoted or escaped file name in a converter: "
                            "not allowed in a tenant's config" % path)
                return
            scan.refer(number, path, PRIVATE)
        for path in HAPROXY_JWT_FILE.findall(word):
            if set(path) & set("'\"\\ \t"):
                scan.refuse(number, line, "%s: a quoted or escaped file name in a converter: "
                            "not allowed in a tenant's config" % path)
                return
            scan.refer(number, path, TLS)
    for index, option in enumerate(arguments[:-1]):
        following = arguments[index + 1]
        if option == "-f":
            scan.refer(number, following, PRIVATE)  # an ACL's pattern file
        elif option in HAPROXY_TLS_OPTIONS and following != "@system-ca":
            base = scan.bases.get(HAPROXY_TLS_OPTIONS[option] or "") \
                if following[:1] != "/" else None
            scan.refer(number, following if base is None else base + "/" + following, TLS)
        elif option == "crt-list":
            if not following.startswith("/"):
                # The one form the API stores it under: no base or working
                # folder to resolve it against.
                scan.refuse(number, line, "crt-list %s: name it {INSTANCE_DIR}/crt-lists/<name>"
                            % following)
                return
            scan.refer(number, following, CRT_LIST)
        elif option in HAPROXY_PAGE_OPTIONS and keyword in HAPROXY_PAGE_RULES:
            scan.refer(number, following, PAGE)
        elif option == "config" and keyword == "filter":
            scan.refer(number, following, PRIVATE)  # a SPOE configuration
        elif option in HAPROXY_ADDRESS_OPTIONS and following.startswith("/"):
            scan.refer(number, following, CONNECT)  # a unix socket, as haproxy reads "/..."
    if keyword in HAPROXY_TLS_KEYWORDS and arguments:
        scan.refer(number, arguments[0], TLS)
        if keyword.endswith("-base"):
            scan.bases[keyword] = _absolute(arguments[0], scan.instance_dir)
    elif keyword == "errorfile" and len(arguments) >= 2:
        scan.refer(number, arguments[1], PAGE)
    elif keyword in HAPROXY_PRIVATE_FILE_KEYWORDS and arguments:
        scan.refer(number, arguments[HAPROXY_PRIVATE_FILE_KEYWORDS[keyword] - 1], PRIVATE)
    if keyword == "bind" and arguments:
        _haproxy_endpoints(scan, number, line, [words[keyword_at + 1]])
    elif keyword == "dgram-bind" and arguments:
        _haproxy_datagram_endpoints(scan, number, line, words[keyword_at + 1])
    elif keyword == "stats" and len(arguments) >= 2 and arguments[0] == "socket":
        address = arguments[1]
        levels = [value for option, value in zip(arguments, arguments[1:]) if option == "level"]
        if "," in address:
            scan.refuse(number, line, "a stats socket on several addresses: give each its own "
                        "line")
            return
        if not (address.startswith("/") or address.startswith(UNIX_PREFIXES)) \
                and levels != ["user"]:
            # Its runtime API adds servers (to any socket), swaps certificates, shows maps.
            scan.refuse(number, line, "a stats socket on a TCP address must be `level user`: "
                        "any other level gives whoever reaches it haproxy's runtime API (use "
                        "a unix socket in {INSTANCE_DIR} for more)")
            return
        _haproxy_endpoints(scan, number, line, [words[keyword_at + 2]])
    elif keyword in HAPROXY_CONNECTING and len(arguments) >= HAPROXY_CONNECTING[keyword]:
        address = arguments[HAPROXY_CONNECTING[keyword] - 1]
        if keyword in ("peer", "server") and scan.section == "peers":
            # The local peer listens on its address: a listener like a bind.
            _haproxy_endpoints(scan, number, line, [words[keyword_at + 2]], service_ip=False)
        else:
            _haproxy_destination(scan, number, line, address)


def _haproxy_destination(scan, number, line, address):
    """An address haproxy connects or sends to: a unix socket must be the
    instance's own; inherited descriptors and abstract sockets are refused."""
    if address.startswith("/"):
        scan.refer(number, address, CONNECT)  # unix@ and the refused prefixes: every word's rule


def _haproxy_datagram_endpoints(scan, number, line, word):
    """A log-forward's dgram-bind: UDP addresses, literal like a bind's (not
    TCP listeners: they claim no TCP port), or unix sockets it makes."""
    text, plain = word
    if not plain:
        scan.refuse(number, line, "quotes, escapes and variables are not allowed in a "
                    "listening address")
        return
    for endpoint in text.split(","):
        if endpoint.startswith(UNIX_PREFIXES) or endpoint.startswith("/"):
            if endpoint.startswith("/"):
                scan.refer(number, endpoint, SOCKET)
            continue  # judged with every unix@ word
        for prefix in UDP_PREFIXES:
            if endpoint.startswith(prefix):
                endpoint = endpoint[len(prefix):]
                break
        if parse_endpoint(endpoint, number) is None:
            scan.refuse(number, line, "%s is not a literal address:port (use an IP address, "
                        "[IPv6], * or {MYIP}; host names are refused)" % endpoint)
            return


def _haproxy_endpoints(scan, number, line, words, service_ip=True):
    for text, plain in words:
        if not plain:
            scan.refuse(number, line, "quotes, escapes and variables are not allowed in a "
                        "listening address")
            return
        for endpoint in text.split(","):
            if endpoint.startswith(UNIX_PREFIXES):
                continue  # a file the daemon makes: judged with every unix@ word
            if endpoint.startswith("/"):
                scan.refer(number, endpoint, SOCKET)  # a file the daemon makes
                continue
            _add_listener(scan, number, line, endpoint, endpoint, "address:port", service_ip)


# stunnel 5.68 reads a config line in pieces of 16383 bytes: the rest of a
# longer one is read as a line of its own (a review hid `exec` that way).
STUNNEL_LINE_LIMIT = 16000


def _scan_stunnel(scan, number, line):
    if len(line.encode("utf-8", "surrogateescape")) > STUNNEL_LINE_LIMIT:
        scan.refuse(number, line, "longer than %d bytes: stunnel would read it as several "
                    "lines" % STUNNEL_LINE_LIMIT)
        return
    read = stunnel_line(line)
    if read is None or read[0] == "section":
        return
    _option, key, value = read
    if key in REFUSED_STUNNEL_OPTIONS:
        scan.refuse(number, line, "%s %s: not allowed in a tenant's config"
                    % (key, REFUSED_STUNNEL_OPTIONS[key]))
        return
    if key == "config" and "/" in value:
        scan.refuse(number, line, "config: an OpenSSL command that names a file is not allowed "
                    "(use cert, key, CAfile and CRLfile)")
        return
    if "/" in value:
        scan._path_words.append((number, _absolute(value, scan.instance_dir)))
    purpose = (TLS if key in (o.lower() for o in STUNNEL_TLS_OPTIONS) else
               PRIVATE if key in STUNNEL_PRIVATE_OPTIONS else
               CONNECT if key in STUNNEL_CONNECTING and value.startswith("/") else None)
    if purpose is not None:
        if not value.startswith("/"):
            # stunnel reads a relative path against its working folder,
            # which is / once it has forked: say it plainly.
            scan.refuse(number, line, "use an absolute path ({INSTANCE_DIR}/certificates/...)")
        else:
            scan.refer(number, value, purpose)
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


def _absolute(path, base):
    """path normalised the way the kernel would resolve it (// and .. folded),
    a relative one read against base."""
    if not path.startswith("/"):
        path = os.path.join(base, path)
    return os.path.normpath(path)
