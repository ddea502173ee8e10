"""The figures `make proof` (and `make test`, lighter) prints at the end.

Tests add to them as they go; each "bad" figure is also asserted to be zero
by the test that counts it, so the table reports what the assertions saw.
"""
import collections
import os

# Heavier runs: more examples, rounds and trials. `make proof` sets it.
HEAVY = os.environ.get("APPLIANCE_PROOF") == "heavy"

COLUMNS = [
    ("inputs", "inputs tried"),
    ("spellings", "haproxy spellings compared"),
    ("server_errors", "500s seen"),
    ("files_corrupted", "files corrupted"),
    ("orphan_daemons", "orphan daemons"),
    ("tls_refused", "requests refused at TLS"),
    ("concurrent_writers", "concurrent writers"),
    ("crash_trials", "crash trials"),
    ("cross_instance_races", "cross-instance races"),
    ("leaked_addresses", "leaked addresses"),
    ("leaked_rules", "leaked or duplicate rules"),
]

counts = collections.Counter()


def add(name, amount=1):
    assert name in dict(COLUMNS), name
    counts[name] += amount


def scaled(light, heavy):
    return heavy if HEAVY else light


def table():
    names = [title for _, title in COLUMNS]
    values = [str(counts[key]) for key, _ in COLUMNS]
    widths = [max(len(n), len(v)) for n, v in zip(names, values)]
    row = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([row(names), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      row(values)])
