"""/instances and /instances/:instance (the original's seed endpoints)."""
from ..response import text
from ..errors import NotFound
from ..layout import Instance, instance_ids


def list_instances(request):
    ids = instance_ids(request.config.state_dir)
    return text(*ids) if ids else text()


def check_instance(request, instance):
    if not Instance(request.config.state_dir, instance).exists():
        raise NotFound()
    return text("OK")


def delete_instance(request, instance):
    from .. import changes  # daemons and psutil: only a DELETE pays for them

    return text("OK", *changes.delete_instance(request.config, instance))
