"""haproxy crt-lists: read as haproxy 2.6 reads them, and held to the
instance's own certificates.

haproxy 2.6 reads a crt-list a line at a time (ssl_crtlist.c): a line whose
first non-blank character is `#` is a comment, a blank one is skipped, any
other is

    <certificate file> [[<ssl option> ...]] [[!]<SNI filter> ...]

split at white space, with `[` and `]` separators too wherever they stand;
no quotes, escapes, variables or comments inside a line (a `#` there is an
SNI filter). A tenant's line must name its certificate, and any file an
option names, as {INSTANCE_DIR}/certificates/<name>.pem of a stored file of
the right kind; options come from ALLOWED_OPTIONS only, each value of a
plain shape; SNI filters are host names, `*.` wildcards and `!` negations.
Anything else is a 409 naming the line.

What haproxy reads is the crt-list with {INSTANCE_DIR} filled in (render);
what a controller gets back, and the ETag and the manifest hash, is the
upload itself (unrender: exact, since an accepted line names the instance's
folder only through the placeholder).
"""
import os
import re

from .errors import Conflict
from .layout import CERTIFICATES_NAME, is_certificate_name

PLACEHOLDER = "{INSTANCE_DIR}/" + CERTIFICATES_NAME + "/"
# haproxy 2.6's line limit is 64 KiB (CRT_LINESIZE); a tenant's lines are short.
LINE_LIMIT = 4096
WORD_LIMIT = 256

# ALPN and NPN names such as h2 and http/1.1: a / only before a version
# (nor could the instance's folder then stand in one: unrender stays exact).
_PROTOCOL = r"[A-Za-z0-9._-]{1,64}(?:/[0-9.]{1,16})?"
_PROTOCOLS = r"%s(?:,%s)*" % (_PROTOCOL, _PROTOCOL)
_VERSIONS = r"SSLv3|TLSv1\.[0-3]"
# Each option haproxy 2.6 takes in a crt-list that names no file: the shape
# its value must have and how the 409 says it (None: a flag, no value).
ALLOWED_OPTIONS = {
    "allow-0rtt": None,
    "no-ca-names": None,
    "alpn": (_PROTOCOLS, "protocol names such as h2,http/1.1"),
    "npn": (_PROTOCOLS, "protocol names such as h2,http/1.1"),
    "ciphers": (r"[A-Za-z0-9_+!:@=.-]{1,1024}", "an OpenSSL cipher list"),
    "ciphersuites": (r"[A-Za-z0-9_:]{1,1024}", "TLS 1.3 cipher suites such as "
                     "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"),
    "curves": (r"[A-Za-z0-9_:-]{1,512}", "curve names such as X25519:P-256"),
    "ecdhe": (r"[A-Za-z0-9_-]{1,64}", "a curve name such as prime256v1"),
    "ssl-min-ver": (_VERSIONS, "SSLv3, TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3"),
    "ssl-max-ver": (_VERSIONS, "SSLv3, TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3"),
    "verify": (r"none|optional|required", "none, optional or required"),
}
# Options that name a file: only a stored file of the instance, of this kind.
FILE_OPTIONS = {"ca-file": "a CA file", "ca-verify-file": "a CA file", "crl-file": "a CRL"}
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
SNI_FILTER = re.compile(r"!?(?:\*\.)?%s(?:\.%s)*|!\*" % (_LABEL, _LABEL))


def render(data, instance_dir):
    """The stored upload with {INSTANCE_DIR} filled in: what haproxy reads."""
    return _swap(data, PLACEHOLDER, os.path.abspath(instance_dir) + "/" + CERTIFICATES_NAME + "/")


def unrender(stored, instance_dir):
    """What the controller uploaded, from the stored (rendered) file."""
    return _swap(stored, os.path.abspath(instance_dir) + "/" + CERTIFICATES_NAME + "/", PLACEHOLDER)


def _swap(data, old, new):
    """data with old made new on its entry lines (comments are kept as written)."""
    old, new = old.encode(), new.encode()
    return b"".join(line if _is_skipped(line) else line.replace(old, new)
                    for line in data.splitlines(keepends=True))


def _is_skipped(line):
    """A comment or a blank line, as haproxy skips them: a comment is a line
    whose first byte is #. One that starts with blanks and then # is an
    entry to haproxy, whose options it reads (check refuses it)."""
    return line.startswith(b"#") or not line.strip(b" \t\r\n\v\f")


class Entry:
    """One line of a crt-list: the certificate, the options' words, the SNI filters."""

    def __init__(self, certificate, options, filters):
        self.certificate, self.options, self.filters = certificate, options, filters


def words(line):
    """haproxy 2.6's crtlist_parse_line: (words, index of the first word
    inside [ ], index of the first after ]) with 0 for a missing bracket;
    ValueError for what haproxy refuses."""
    found, opened, closed, new_word = [], 0, 0, True
    for char in line:
        if char in " \t\n\v\f\r":
            new_word = True
        elif char == "[":
            if opened:
                raise ValueError("more than one '['")
            if not found:
                raise ValueError("a line starts with its certificate, not '['")
            opened, new_word = len(found), True
        elif char == "]":
            if closed:
                raise ValueError("more than one ']'")
            if not opened:
                raise ValueError("']' without '['")
            closed, new_word = len(found), True
        elif new_word:
            found.append(char)
            new_word = False
        else:
            found[-1] += char
    if opened and not closed:
        raise ValueError("'[' without ']'")
    if opened > 1:
        raise ValueError("SNI filters before the options: the options come right after "
                         "the certificate")
    return found, opened, closed


def parse_line(line, file_kind):
    """One entry line (not a comment, not blank) checked: an Entry with the
    certificate's and the option files' stored names. file_kind(name) is
    "key" (a key and certificate file), "ca", "crl", or None (not stored).
    ValueError with the reason otherwise."""
    if len(line) > LINE_LIMIT:
        raise ValueError("longer than %d characters" % LINE_LIMIT)
    for char in line:
        if not (" " <= char <= "~" or char in "\t\r"):
            raise ValueError("character %r: a crt-list is plain ASCII text" % char)
    if set(line) & set("\"'\\$"):
        raise ValueError("quotes, escapes and variables: haproxy reads a crt-list's words as "
                         "written, so none may stand in one")
    found, opened, closed = words(line)
    if len(found) > WORD_LIMIT:
        raise ValueError("more than %d words" % WORD_LIMIT)
    certificate = _stored_name(found[0], "the certificate")
    if file_kind(certificate) != "key":
        raise ValueError("%s is not a stored key and certificate file of this instance"
                         % found[0])
    options = found[opened:closed] if opened else []
    files = [certificate]
    position = 0
    while position < len(options):
        option = options[position]
        if option in FILE_OPTIONS:
            if position + 1 >= len(options):
                raise ValueError("%s needs a file" % option)
            name = _stored_name(options[position + 1], option)
            wanted = "crl" if option == "crl-file" else "ca"
            if file_kind(name) != wanted:
                raise ValueError("%s %s is not %s stored for this instance" % (
                    option, options[position + 1], FILE_OPTIONS[option]))
            files.append(name)
            position += 2
        elif option in ALLOWED_OPTIONS:
            shape = ALLOWED_OPTIONS[option]
            if shape is None:
                position += 1
                continue
            if position + 1 >= len(options) or not re.fullmatch(shape[0], options[position + 1]):
                raise ValueError("%s needs %s" % (option, shape[1]))
            position += 2
        else:
            raise ValueError("%s: not an option a crt-list may set here (allowed: %s)" % (
                option, ", ".join(sorted(list(ALLOWED_OPTIONS) + list(FILE_OPTIONS)))))
    filters = found[closed:] if opened else found[1:]
    for sni in filters:
        if not SNI_FILTER.fullmatch(sni):
            raise ValueError("%s is not an SNI filter (a host name, *.domain, or either "
                             "after !, or !*)" % sni)
    return Entry(certificate, options, filters), files


def _stored_name(word, what):
    if not word.startswith(PLACEHOLDER) or not is_certificate_name(word[len(PLACEHOLDER):]):
        raise ValueError("%s %s must be named %s<name>.pem" % (what, word, PLACEHOLDER))
    return word[len(PLACEHOLDER):]


def check(data, file_kind):
    """The upload read line by line; Conflict naming each refused line. The
    certificate files its lines name, in order (stored names)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise Conflict("Invalid crt-list", "The crt-list is not ASCII text") from None
    problems, named = [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if len(line) > LINE_LIMIT:
            problems.append("line %d: longer than %d characters" % (number, LINE_LIMIT))
            continue
        if _is_skipped(line.encode()):
            if "\x00" in line:
                problems.append("line %d: a NUL character" % number)
            continue
        if line.lstrip(" \t\v\f\r").startswith("#"):
            problems.append("line %d: %s: a comment must start the line (haproxy reads "
                            "this one as an entry, options and all)" % (number, _shown(line)))
            continue
        try:
            _entry, files = parse_line(line, file_kind)
        except ValueError as error:
            problems.append("line %d: %s: %s" % (number, _shown(line), error))
            continue
        named += [name for name in files if name not in named]
    if problems:
        raise Conflict("Invalid crt-list", "\n".join(problems))
    return named


def named_files(stored):
    """The stored names of the certificate files a stored crt-list reads
    (certificates, CA files, CRLs): for refusing their deletion."""
    named = set()
    for line in stored.decode("ascii", "replace").split("\n"):
        if _is_skipped(line.encode()):
            continue
        try:
            found, opened, closed = words(line)
        except ValueError:
            continue
        candidates = [found[0]] + [value for option, value in zip(found[opened:closed],
                                                                   found[opened + 1:closed])
                                   if option in FILE_OPTIONS]
        named.update(os.path.basename(path) for path in candidates)
    return named


def file_kind_in(certificates_dir):
    """file_kind for parse_line: what a stored file of the folder is, by its PEM labels
    (certcheck judged each file at its upload)."""
    def file_kind(name):
        try:
            with open(os.path.join(certificates_dir, name), "rb") as file:
                data = file.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if b"PRIVATE KEY-----" in data:
            return "key"
        if b"-----BEGIN X509 CRL-----" in data:
            return "crl"
        if b"-----BEGIN CERTIFICATE-----" in data:
            return "ca"
        return None
    return file_kind


def _shown(line):
    line = line.strip()
    return line if len(line) <= 200 else line[:197] + "..."
