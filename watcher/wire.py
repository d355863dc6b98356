"""What both sides of the APIs agree on: their paths and the read API's own headers. Imported by the
server and by the clients (``notify``, ``rollout status``, ``status``), so a client does not pull in
the server (aiohttp's web side)."""

import enum

REPORTS_PATH = "/api/v1/deployments"  # POST: the CI/CD API; GET: the read API's list of deployments
EVENTS_PATH = "/api/v1/events"  # the read API's event stream

# With each answer of the read API's list and one deployment (docs/api.md, "What an answer says of the watcher"):
EVENT_ID_HEADER = "Deployment-Watcher-Event-Id"  # the newest event id of the answer's state: <run>.<sequence>
READY_HEADER = "Deployment-Watcher-Ready"  # "true" once synced with the Docker Engine (as /ready), else "false"
MAX_LENGTH_HEADER = "Deployment-Watcher-Max-Value-Length"  # labels.max_value_length: names are cut to it


class StreamEvent(enum.StrEnum):
    """The names of the stream's events about a deployment, in the order a rollout meets them (docs/api.md
    describes each). openapi.json lists them and board.js listens for them: a unit test keeps both to this."""

    ROLLOUT_STARTED = "rollout_started"
    ROLLBACK_STARTED = "rollback_started"
    HEALTH_CHANGED = "health_changed"
    ANALYSIS_MEASURED = "analysis_measured"
    ANALYSIS_FINISHED = "analysis_finished"
    ROLLOUT_FINISHED = "rollout_finished"
    ROLLOUT_REVISED = "rollout_revised"
    ROLLOUT_SUPERSEDED = "rollout_superseded"
    DEPLOYMENT_CHANGED = "deployment_changed"
    DEPLOYMENT_REMOVED = "deployment_removed"
    DEPLOYMENT_RETURNED = "deployment_returned"
    DEPLOYMENT_GONE = "deployment_gone"


# The stream's one event about no deployment: what a client missed is no longer kept, read the list again.
RESYNC_EVENT = "resync"
