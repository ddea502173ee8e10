"""/manifest: every stored file with its SHA-256, for the standby's sync."""
import json

from ..response import Response


def get_manifest(request):
    from ..manifest import build

    return Response(json.dumps(build(request.config), sort_keys=True),
                    content_type="application/json")
