"""The controller's client for the appliance API.

    appliance = Appliance("10.0.0.2", ca="ca.pem", cert="controller.pem")
    appliance.put_config(instance, "haproxy", template)

    pair = Cluster([Appliance("10.0.0.2", ...), Appliance("10.0.0.3", ...)])
    pair.apply("put_config", instance, "haproxy", template).raise_for_failures()

One `Appliance` is one keep-alive mutual-TLS connection, a method per
endpoint returning parsed results, typed errors carrying the API's reason and
detail, and bounded retries with backoff where a retry is safe. `Cluster`
sends a change to the primary first, then to the others at once.

Standard library only: it runs on the controller. HTTP/1.1 only (http.client);
the appliance's lighttpd has HTTP/2 turned off on purpose (README, "The HTTP
edge").

The package: appliance.py (Appliance, one appliance), cluster.py (Cluster,
a pair), errors.py (what they raise).
"""
from .appliance import (UNCHANGED, Answer, Appliance, InstanceStatus, ServiceState, 
                        parse_service_status)
from .cluster import Cluster, ClusterResult, NodeResult 
from .errors import (ApiBusy, ApiConflict, ApiError, ApiInvalidRequest, ApiNotFound, 
                     ApiServerError, ApiTooLarge, ClientError, ClusterFailed, ConnectionFailed)

__all__ = ["UNCHANGED", "Answer", "Appliance", "InstanceStatus", "ServiceState",
           "parse_service_status", "Cluster", "ClusterResult", "NodeResult", "ApiBusy",
           "ApiConflict", "ApiError", "ApiInvalidRequest", "ApiNotFound", "ApiServerError",
           "ApiTooLarge", "ClientError", "ClusterFailed", "ConnectionFailed"]
