"""How haproxy and stunnel read their config files, word by word: the one
reader of each language. configscan.py judges a tenant's config with it;
the listener view (handlers/listeners.py) reads a listener's type with it.
Standard library only, and no `re`: GET /listeners reads every instance.
"""

# Every section keyword of haproxy 2.6.
HAPROXY_SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "peers",
                    "resolvers", "userlist", "mailers", "cache", "ring", "program",
                    "http-errors", "fcgi-app", "log-forward")
# Characters after which a line is not read by str.split: quotes, escapes,
# and the ones str.split would take for spaces while haproxy does not (or
# ends the line at).
_NOT_PLAIN = frozenset("\"'\\\0\n\r\x1c\x1d\x1e\x1f")


def haproxy_words(line):
    r"""The words of one haproxy config line, as haproxy 2.6's parse_line()
    makes them: [(text, plain)], plain False for a word with quotes or
    escapes. ValueError for what the scan refuses to read: an environment
    reference (a $ inside double quotes, unescaped), an unterminated quote,
    an invalid \xHH escape, or an escape that makes a NUL (haproxy's word
    would end there). An ASCII line with none of _NOT_PLAIN is split as
    haproxy would split it, forty times faster (GET /listeners reads every
    instance's config)."""
    if line.isascii() and _NOT_PLAIN.isdisjoint(line):
        return [(word, True) for word in line.split("#", 1)[0].split()]
    return parse_line(line)


def parse_line(line):
    """haproxy_words, character by character, as haproxy's parse_line() reads."""
    words, current, plain, squote, dquote, index = [], None, True, False, False, 0
    length = len(line)
    while index < length:
        char = line[index]
        if char in "\n\r\0":
            break
        if char == "#" and not squote and not dquote:
            break
        if char == '"' and not squote:
            dquote, plain, current = not dquote, False, current or ""
        elif char == "'" and not dquote:
            squote, plain, current = not squote, False, current or ""
        elif char == "\\" and not squote:
            plain, current = False, current or ""
            following = line[index + 1:index + 2]
            if following in (" ", "\\", "#", "'", '"') or (following == "$" and dquote):
                current += following
                index += 1
            elif following in ("t", "n", "r"):
                current += {"t": "\t", "n": "\n", "r": "\r"}[following]
                index += 1
            elif following == "x":
                digits = line[index + 2:index + 4]
                if len(digits) != 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise ValueError("invalid \\x escape (two hexadecimal digits)")
                if digits == "00":
                    raise ValueError("\\x00: haproxy's word would end there")
                if digits[0] not in "01234567":
                    raise ValueError("\\x%s: an escape past ASCII is not allowed (haproxy "
                                     "makes one byte of it, not a character)" % digits)
                current += chr(int(digits, 16))
                index += 3
            else:
                current += "\\"  # not an escape: haproxy keeps the backslash
        elif char in " \t\v\f" and not squote and not dquote:
            if current is not None:
                words.append((current, plain))
                current, plain = None, True
        elif char == "$" and dquote:
            raise ValueError("environment variables are not allowed in a tenant's config "
                             "(haproxy expands \"$NAME\" and \"${NAME-default}\" inside double "
                             "quotes; write the value, or \\$ for a dollar sign)")
        else:
            current = (current or "") + char
        index += 1
    if squote or dquote:
        raise ValueError("unterminated quote")
    if current is not None:
        words.append((current, plain))
    return words


def haproxy_listener_type(text):
    """HTTPS if any bind ends TLS, else the mode of the first frontend or
    listen section that binds, upper case (TCP, haproxy's default, when none
    does). A section starts from its defaults' mode (the section `from`
    names, else the last defaults before it); a defaults section starts from
    tcp or the one it comes `from`. Words as haproxy reads them (haproxy_words);
    a line it could not read counts for nothing."""
    last_defaults = "tcp"
    named = {}  # mode of each named defaults section
    listening = []  # the frontend and listen sections
    section = None
    for line in text.splitlines():
        try:
            words = [word for word, _plain in haproxy_words(line)]
        except ValueError:
            continue
        if not words:
            continue
        keyword = words[0].lower()
        if keyword in HAPROXY_SECTIONS:
            parent = words[words.index("from") + 1] if "from" in words[1:-1] else None
            name = words[1] if len(words) > 1 and words[1] != "from" else None
            if keyword == "defaults":
                mode = named.get(parent, "tcp")
            else:
                mode = named.get(parent, last_defaults) if parent else last_defaults
            section = {"kind": keyword, "name": name, "mode": mode, "binds": False}
            if keyword == "defaults":
                last_defaults = mode
                if name:
                    named[name] = mode
            elif keyword in ("frontend", "listen"):
                listening.append(section)
        elif section is None:
            continue
        elif keyword == "mode" and len(words) > 1:
            section["mode"] = words[1].lower()
            if section["kind"] == "defaults":
                last_defaults = section["mode"]
                if section["name"]:
                    named[section["name"]] = section["mode"]
        elif keyword == "bind" and section["kind"] in ("frontend", "listen"):
            if "ssl" in words[2:]:
                return "HTTPS"
            section["binds"] = True
    modes = [section["mode"] for section in listening if section["binds"]]
    return (modes[0] if modes else "tcp").upper()


def stunnel_line(line):
    """One stunnel config line as stunnel reads it: ("section", name),
    ("option", key lower-cased, value), or None (blank, a comment: ; or #
    first, or no =). Both sides of = are stripped."""
    stripped = line.strip()
    if not stripped or stripped.startswith((";", "#")):
        return None
    if stripped.startswith("["):
        return ("section", stripped[1:].split("]", 1)[0].strip())
    key, equals, value = stripped.partition("=")
    return ("option", key.strip().lower(), value.strip()) if equals else None


def stunnel_terminates_tls(text):
    """Whether a service of the stunnel config accepts TLS: any without
    `client = yes` (set in the service, or in the global part before the
    first service, which is every service's default)."""
    default_client, services = False, []  # `client` of each service, None: the default
    for line in text.splitlines():
        read = stunnel_line(line)
        if read is None:
            continue
        if read[0] == "section":
            services.append(None)
        elif read[1] == "client":
            client = read[2].lower() == "yes"
            if services:
                services[-1] = client
            else:
                default_client = client
    return any(not (default_client if client is None else client) for client in services)
