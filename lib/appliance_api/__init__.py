"""appliance-api: the back-end API of a load-balancer appliance (see README.md)."""
