"""The change gate: what every change to the appliance passes first,
whoever makes it (a controller's request, octctl, the sync finishing a
killed change). Written once here; the instance lock is taken after it, by
whoever knows the instance.

- No change while the topology changes: 503 `Cluster transition in
  progress` (ClusterTransition), having changed nothing.
- One of the appliance-wide change slots (system/slots.py), or 503 with
  Retry-After once [limits] change_wait has passed (system.Busy).
"""
import contextlib

from .errors import ClusterTransition


@contextlib.contextmanager
def change_gate(config):
    from .system.slots import change_slot  # reads never pass the gate
    from .topology import transition_running

    if transition_running(config.state_dir):
        raise ClusterTransition()
    with change_slot(config):
        yield
