"""What both sides of the APIs agree on: their paths. Imported by the server and by the clients
(``notify``, ``rollout status``, ``status``), so a client does not pull in the server (aiohttp's web side)."""

REPORTS_PATH = "/api/v1/deployments"  # POST: the CI/CD API; GET: the read API's list of deployments
EVENTS_PATH = "/api/v1/events"  # the read API's event stream
