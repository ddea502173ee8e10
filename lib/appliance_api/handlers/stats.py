"""GET /instances/:instance/stats (one tenant's haproxy, JSON) and GET
/metrics (the appliance and every tenant, Prometheus' text format). Both
read haproxy's master CLI only: no psutil, no cryptography."""
from ..errors import NotFound
from ..layout import Instance
from ..response import Response


def get_instance_stats(request, instance):
    instance = Instance(request.config.state_dir, instance)
    if not instance.exists():
        raise NotFound()
    import json

    from ..tenant_stats import instance_stats

    return Response(json.dumps(instance_stats(instance, request.config)),
                    content_type="application/json")


def get_metrics(request):
    from .. import metrics

    return Response(metrics.render(request.config), content_type=metrics.CONTENT_TYPE)
