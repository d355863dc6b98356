"""What both sides of the CI/CD API agree on: its path. Imported by the server and by ``notify``,
so the client does not pull in the server (aiohttp's web side)."""

REPORTS_PATH = "/api/v1/deployments"
