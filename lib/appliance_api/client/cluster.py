"""Cluster: a change to the primary first, then to the others at once."""
import concurrent.futures
import dataclasses
import functools

from .errors import ClusterFailed


@dataclasses.dataclass
class NodeResult:
    """One appliance's part of a cluster call: ok and its value, or its error;
    neither when it was not attempted (the primary failed first)."""
    appliance: object
    ok: bool = False
    value: object = None
    error: object = None

    @property
    def skipped(self):
        return not self.ok and self.error is None


class ClusterResult:
    """[NodeResult], the primary first."""

    def __init__(self, results):
        self.results = list(results)

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def __getitem__(self, index):
        return self.results[index]

    @property
    def ok(self):
        return all(result.ok for result in self.results)

    @property
    def failures(self):
        return [result for result in self.results if result.error is not None]

    @property
    def values(self):
        return [result.value for result in self.results]

    def summary(self):
        lines = ["%s: %s" % (_name(result.appliance), result.error) for result in self.failures]
        skipped = [_name(result.appliance) for result in self.results if result.skipped]
        if skipped:
            lines.append("not attempted (the primary failed): %s" % ", ".join(skipped))
        return "\n".join(lines) or "every appliance succeeded"

    def raise_for_failures(self):
        """ClusterFailed (carrying this result) unless every appliance succeeded."""
        if not self.ok:
            raise ClusterFailed(self)
        return self


class Cluster:
    """The appliances of one cluster, the primary first.

    An operation is a method name of Appliance ("put_config") or a callable
    taking the appliance first; both get the call's other arguments.
    """

    def __init__(self, appliances):
        self.appliances = list(appliances)
        if not self.appliances:
            raise ValueError("a cluster needs at least one appliance")

    @property
    def primary(self):
        return self.appliances[0]

    @property
    def secondaries(self):
        return self.appliances[1:]

    def apply(self, operation, *args, **kwargs):
        """A change: the primary first; if it fails, no other appliance is
        touched. Then the others at once, each on its own. A secondary's
        failure is reported and undoes nothing on the primary: the change is
        the same on every node, so the controller repeats it there."""
        first = _run(self.primary, operation, args, kwargs)
        if not first.ok:
            return ClusterResult([first] + [NodeResult(node) for node in self.secondaries])
        return ClusterResult([first] + _run_all(self.secondaries, operation, args, kwargs))

    def gather(self, operation, *args, **kwargs):
        """Every appliance at once (reads)."""
        return ClusterResult(_run_all(self.appliances, operation, args, kwargs))

    def close(self):
        for appliance in self.appliances:
            appliance.close()


def _run(appliance, operation, args, kwargs):
    """Any exception is that appliance's result: one node's surprise must not
    hide what the others did. raise_for_failures raises it again."""
    call = getattr(appliance, operation) if isinstance(operation, str) else \
        functools.partial(operation, appliance)
    try:
        return NodeResult(appliance, True, call(*args, **kwargs))
    except Exception as error:
        return NodeResult(appliance, error=error)


def _run_all(appliances, operation, args, kwargs):
    if not appliances:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(appliances)) as pool:
        futures = [pool.submit(_run, node, operation, args, kwargs) for node in appliances]
        return [future.result() for future in futures]


def _name(appliance):
    return getattr(appliance, "name", None) or repr(appliance)
