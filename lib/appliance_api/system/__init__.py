"""Operating-system effects: files, locks, processes, daemons, addresses, firewall.

Nothing here imports above system/ but layout (which only names paths), and
nothing here knows HTTP: it raises its own errors, which app.handle and
octctl turn into answers (errors.from_system).
"""


class MachineError(Exception):
    """What the machine could not do: a program missing, failing or hanging,
    a check that could not be confined. One line an operator can act on; the
    API answers it with 500."""


class Busy(Exception):
    """Every change slot is taken (slots.py): nothing was changed, try again
    after retry_after seconds. The API answers it with 503 and Retry-After."""

    def __init__(self, reason, detail="", retry_after=1):
        super().__init__(reason)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after
