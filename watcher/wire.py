"""What both sides of the APIs agree on: their paths and the read API's own headers. Imported by the
server and by the clients (``notify``, ``rollout status``, ``status``), so a client does not pull in
the server (aiohttp's web side)."""

REPORTS_PATH = "/api/v1/deployments"  # POST: the CI/CD API; GET: the read API's list of deployments
EVENTS_PATH = "/api/v1/events"  # the read API's event stream

# With each answer of the read API's list and one deployment (docs/api.md, "What an answer says of the watcher"):
EVENT_ID_HEADER = "Deployment-Watcher-Event-Id"  # the newest event id of the answer's state: <run>.<sequence>
READY_HEADER = "Deployment-Watcher-Ready"  # "true" once synced with the Docker Engine (as /ready), else "false"
MAX_LENGTH_HEADER = "Deployment-Watcher-Max-Value-Length"  # labels.max_value_length: names are cut to it
