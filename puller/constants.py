"""Every constant in one place, so tests can patch them."""

LABEL_PREFIX = "io.puller."
LABEL_SERVICE = "io.puller.service"
LABEL_NODE = "io.puller.node"
LABEL_HASH = "io.puller.hash"

PREVIOUS_SUFFIX = ".prev"  # the stopped predecessor kept during a recreate
NEXT_SUFFIX = ".next"  # rollout order start-first: the new container proving itself beside the old

DEFAULT_DIR = "/etc/puller"
DEFAULT_PORT = 7946  # sync protocol; the HTTP API listens on port + 1
DEFAULT_INTERVAL = 30.0  # seconds between passes when nothing wakes the loop
DEFAULT_PULL_EVERY = 1  # pull on every Nth pass
DEFAULT_TAG = "latest"

PULL_WORKERS = 4  # pulls of distinct images run concurrently, at most this many
WATCH_DEBOUNCE = 0.02  # seconds to coalesce a burst of file events into one pass

START_BACKOFF_MIN = 1.0  # seconds before restarting an exited container again
START_BACKOFF_MAX = 300.0
CREATE_BACKOFF_MIN = 5.0  # seconds before retrying a create that failed
CREATE_BACKOFF_MAX = 600.0

DEFINITION_SUFFIXES = (".yml", ".yaml")
# A service name (a file name, a container name, a path segment of the API): checked by the
# definitions and, before any request, by the client.
SERVICE_NAME_PATTERN = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z"

LABEL_IMAGE = "io.puller.image"  # the image id the container was created from
LABEL_REF = "io.puller.ref"  # the image as its definition asked for it (repo:tag, repo@digest)
OCI_VERSION_LABEL = "org.opencontainers.image.version"  # an image's own version, when it says

UPDATE_POLICIES = ("auto", "notify", "manual")  # a definition's update: field; the first is the default

DEPLOY_WORKERS = 4  # container changes of distinct services run concurrently
DEPLOY_CLOSE_WAIT = 60.0  # seconds a stopping daemon waits for the deploys in flight
DOCKER_TIMEOUT = 120.0  # seconds for a docker CLI call other than a pull
PULL_TIMEOUT = 1800.0
STOP_TIMEOUT = None  # seconds for docker stop; None = the container's own setting

REGISTRY_RATE = 50.0  # manifest HEADs per second to one registry, at most
CHECK_BACKOFF_MIN = 5.0  # seconds before asking a failing registry again
CHECK_BACKOFF_MAX = 600.0
DEFAULT_STATE_DIR = "/var/lib/puller"  # puller's own docker config (Google logins) and state

API_MAX_BODY = 1 << 20  # bytes of an HTTP request body, at most
API_DISCARD_UNTRUSTED = 64 * 1024  # bytes of a refused body read (not kept) before its answer
API_PASS_TIMEOUT = 300.0  # seconds an HTTP trigger waits for its pass

DEFAULT_HEALTH_TIMEOUT = 10.0  # seconds a new container must stay up before its predecessor goes
HISTORY_LENGTH = 20  # revisions kept per service
DEFAULT_KEEP_IMAGES = 3  # releases per service whose pulled images stay; 0: retention off
PROBATION_CHECK = 1.0  # seconds between looks at a container on probation

DEFAULT_CLUSTER = "default"
SYNC_INTERVAL = 2.0  # seconds between anti-entropy rounds
SYNC_FANOUT = 3  # peers asked each round
SYNC_TIMEOUT = 3.0  # seconds for a peer to connect, and for a whole frame to arrive
SYNC_MAX_CONNECTIONS = 64  # connections to the sync port at once; more are closed at once
SYNC_MAX_PER_ADDRESS = 8  # of them from one address
SYNC_MAX_BUFFERED = 32 * 1024 * 1024  # bytes of frames being received and not yet verified
PEER_BACKOFF_MAX = 10.0  # seconds between tries of a peer that does not answer, at most
REANNOUNCE_CHECK = 30.0  # seconds between looks at this node's addresses (mDNS re-announce)
MAX_HEALTH_TIMEOUT = 86400.0  # seconds
MAX_DEFINITION_BYTES = 256 * 1024
DELETE_GRACE = 1.0  # seconds a file must stay away before its service counts as deleted
OUTAGE_BACKOFF_MAX = 60.0  # seconds between passes, at most, while they keep failing

NOTIFY_BATCH = 2.0  # seconds: notifications within this window go out as one message per destination
NOTIFY_TIMEOUT = 5.0  # seconds to connect to, and to hear from, a notification destination
NOTIFY_ATTEMPTS = 3  # tries of one message to one destination, at most
NOTIFY_RETRY_WAIT = 1.0  # seconds between them
