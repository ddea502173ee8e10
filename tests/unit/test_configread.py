"""configread.py: the one reader of haproxy's and stunnel's config lines."""
import random

import pytest

from appliance_api.configread import haproxy_words, parse_line, stunnel_line

PIECES = ["bind", "server", "s1", "127.0.0.1:80", "#", "# comment", "ssl", "crt", "a#b",
          "\t", "\v", "\f", " ", "  ", "x\x01y", "\x7f", "mode", "http", "{MYIP}:443", "é",
          '"quoted word"', "'single'", "\\ ", "\\#", '"$HOME"', "\x1c", "\r", "\0"]


def test_the_fast_path_reads_every_line_as_haproxys_parse_line_does():
    rng = random.Random(7)
    for _ in range(20000):
        line = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))
        try:
            expected = parse_line(line)
        except ValueError:
            with pytest.raises(ValueError):
                haproxy_words(line)
            continue
        assert haproxy_words(line) == expected, repr(line)


@pytest.mark.parametrize("line, read", [
    ("", None), ("  ; a comment", None), ("# another", None), ("no equals sign", None),
    ("[web]", ("section", "web")), (" [ tls ] ", ("section", "tls")),
    ("Accept = 443", ("option", "accept", "443")),
    ("cert=/a/b.pem ", ("option", "cert", "/a/b.pem")),
    ("options = NO_SSLv3 = x", ("option", "options", "NO_SSLv3 = x")),
])
def test_stunnel_lines_are_read_as_stunnel_reads_them(line, read):
    assert stunnel_line(line) == read
