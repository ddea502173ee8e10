"""A strict reader of Prometheus' text exposition format 0.0.4, for the tests
of /metrics: every line a comment (# HELP, # TYPE), a sample or nothing; a
family's HELP and TYPE before its samples, once; names and label names as the
format allows; label values with only its three escapes; no series twice.
Anything else raises FormatError naming the line."""
import math
import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s=%s(?:,%s=%s)*,?)?\})? (\S+)(?: (-?\d+))?$" % (
    NAME, LABEL_NAME, LABEL_VALUE, LABEL_NAME, LABEL_VALUE))
LABEL = re.compile(r"(%s)=(%s)" % (LABEL_NAME, LABEL_VALUE))
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class FormatError(AssertionError):
    pass


class Family:
    def __init__(self, name):
        self.name, self.help, self.type, self.samples = name, None, None, []


def parse(text):
    """{family name: Family}, each with .help, .type and .samples, a list of
    (labels dict, value float)."""
    if not text.endswith("\n"):
        raise FormatError("the exposition does not end with a line feed")
    families, seen, closed = {}, set(), set()
    current = None
    for number, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (number, line)
        if not line.strip():
            continue
        if line.startswith("#"):
            words = line.split(" ", 3)
            if len(words) >= 3 and words[1] in ("HELP", "TYPE"):
                name = words[2]
                if not re.fullmatch(NAME, name):
                    raise FormatError("bad metric name, " + where)
                if name in closed or (current is not None and current.name != name
                                      and name in families):
                    raise FormatError("family split in two, " + where)
                family = families.setdefault(name, Family(name))
                if current is not None and current is not family:
                    closed.add(current.name)
                current = family
                value = words[3] if len(words) > 3 else ""
                if words[1] == "HELP":
                    if family.help is not None:
                        raise FormatError("second HELP, " + where)
                    if re.search(r"\\[^\\n]", value):
                        raise FormatError("bad escape in HELP, " + where)
                    family.help = value
                else:
                    if family.type is not None or family.samples:
                        raise FormatError("TYPE twice or after samples, " + where)
                    if value not in TYPES:
                        raise FormatError("unknown type, " + where)
                    family.type = value
            continue
        match = SAMPLE.match(line)
        if not match:
            raise FormatError("not a sample, " + where)
        name, labels_text, value_text = match.group(1), match.group(2) or "", match.group(3)
        if current is None or current.name != name:
            raise FormatError("sample outside its family (or without # TYPE), " + where)
        labels = {}
        for label, raw in LABEL.findall(labels_text):
            if label in labels:
                raise FormatError("label twice, " + where)
            labels[label] = _unescape(raw[1:-1])
        try:
            value = float(value_text)
        except ValueError:
            raise FormatError("bad value, " + where)
        if current.type == "counter" and (value < 0 or math.isnan(value)):
            raise FormatError("a counter below zero, " + where)
        series = (name, tuple(sorted(labels.items())))
        if series in seen:
            raise FormatError("series twice, " + where)
        seen.add(series)
        current.samples.append((labels, value))
    for family in families.values():
        if family.type is None:
            raise FormatError("family %s has no # TYPE" % family.name)
    return families


def _unescape(value):
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)
