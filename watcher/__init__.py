"""deployment-watcher: Docker deployments as Prometheus metrics."""

__version__ = "0.1.0"
