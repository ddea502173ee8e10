"""Proof under fire (issue 5): hostile input, concurrent writers, crashes, dead
daemons. Lighter in `make test`, heavier in `make proof` (APPLIANCE_PROOF=heavy)."""
import os
import sys

from hypothesis import HealthCheck, settings

from . import figures

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
for folder in (os.path.join(ROOT, "lib"), os.path.join(ROOT, "tools")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

# Each example may run a checker or a daemon: no per-example deadline.
_common = dict(deadline=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.data_too_large])
settings.register_profile("ci", **_common)
settings.register_profile("proof", **_common)
settings.load_profile("proof" if figures.HEAVY else "ci")


def pytest_terminal_summary(terminalreporter):
    if any(figures.counts.values()):
        terminalreporter.write_sep("=", "proof figures%s" % (" (heavy)" if figures.HEAVY else ""))
        terminalreporter.write_line(figures.table())
