"""The ``puller`` command: ``puller -d ...`` runs the daemon.

The only module that imports click and configures logging; it alone turns
``PullerError`` into a message and an exit code. The Go-style single-dash
flags of the original (``-node=box-1``) work, and so do ``--node box-1`` and
``PULLER_NODE``.
"""

from __future__ import annotations

import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from . import __version__, constants
from .commands import CLIENT_COMMANDS, ClientSettings
from .errors import PullerError

if TYPE_CHECKING:
    from .daemon import Config

def _setup_logging(verbose: bool) -> None:
    import logging  # here: the client commands start faster without it

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("sh", "watchdog", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # puller logs a failing notification destination once; Apprise would on every try
    logging.getLogger("apprise").setLevel(logging.CRITICAL)


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-help", "--help"], "max_content_width": 100},
)
@click.option("-d", "--daemon", "daemon", is_flag=True, envvar="PULLER_DAEMON",
              help="Run the daemon: keep this node's containers in line with the definitions.")
@click.option("-node", "--node", "node", default=socket.gethostname, show_default="the host name",
              envvar="PULLER_NODE", help="This node's name; a service's node: regexp is searched in it.")
@click.option("-dir", "--dir", "directory", default=constants.DEFAULT_DIR, show_default=True,
              envvar="PULLER_DIR", type=click.Path(file_okay=False),
              help="Directory of service definitions (*.yml, *.yaml).")
@click.option("-port", "--port", "port", default=constants.DEFAULT_PORT, show_default=True,
              envvar="PULLER_PORT", type=click.IntRange(1, 65534),
              help="Cluster sync port; the HTTP API listens on port+1.")
@click.option("-interval", "--interval", "interval", default=constants.DEFAULT_INTERVAL,
              show_default=True, envvar="PULLER_INTERVAL", type=click.FloatRange(min=0.05),
              help="Seconds between passes when no event wakes the daemon earlier.")
@click.option("-pull-every", "--pull-every", "pull_every", default=constants.DEFAULT_PULL_EVERY,
              show_default=True, envvar="PULLER_PULL_EVERY", type=click.IntRange(min=1),
              help="Pull every image again on every Nth timed pass.")
@click.option("-verbose", "--verbose", "verbose", is_flag=True, envvar="PULLER_VERBOSE",
              help="Log every decision, no-ops included.")
@click.option("-apikey-file", "--apikey-file", "apikey_file", envvar="PULLER_APIKEY_FILE",
              type=click.Path(dir_okay=False), default=None,
              help="File holding the API key (sent as Authorization: Bearer). Without it or "
                   "-apikey, the daemon makes one in <state-dir>/api.key (0600), which root's "
                   "client reads by itself.")
@click.option("-apikey", "--apikey", "apikey", envvar="PULLER_APIKEY", default=None,
              help="The API key itself; better in PULLER_APIKEY: a command line is visible to "
                   "every user.")
@click.option("-hook-key-file", "--hook-key-file", "hook_key_file",
              envvar="PULLER_HOOK_KEY_FILE", type=click.Path(dir_okay=False), default=None,
              help="File holding a key that opens only the registry hook (or set "
                   "PULLER_HOOK_KEY), in Authorization: Bearer or ?key=.")
@click.option("-api-addr", "--api-addr", "api_addr", envvar="PULLER_API_ADDR", default=None,
              help="Address the HTTP API listens on [default: 127.0.0.1]; beyond loopback it "
                   "needs -api-cert (TLS) or -api-insecure.")
@click.option("-api-host", "--api-host", "api_hosts", multiple=True, envvar="PULLER_API_HOST",
              help="A name the API is reached by (its Host header), besides loopback and this "
                   "host's own names and addresses; repeatable, or a comma list.")
@click.option("-api-cert", "--api-cert", "api_cert", envvar="PULLER_API_CERT", default=None,
              type=click.Path(dir_okay=False), help="PEM certificate (chain): serve the API "
                                                    "over TLS.")
@click.option("-api-cert-key", "--api-cert-key", "api_cert_key", envvar="PULLER_API_CERT_KEY",
              default=None, type=click.Path(dir_okay=False),
              help="PEM private key of -api-cert (if not in the certificate's file).")
@click.option("-api-insecure", "--api-insecure", "api_insecure", is_flag=True,
              envvar="PULLER_API_INSECURE",
              help="Serve plain HTTP beyond loopback: the key and definitions cross the network "
                   "in clear.")
@click.option("-api", "--api", "api_url", envvar="PULLER_API", default=None,
              help="URL of the daemon's API for the client commands [default: "
                   "http://127.0.0.1:<port+1>]; https:// for a TLS API.")
@click.option("-api-ca", "--api-ca", "api_ca", envvar="PULLER_API_CA", default=None,
              type=click.Path(dir_okay=False),
              help="CA file the client trusts for an https -api (e.g. the daemon's self-signed "
                   "certificate) [default: the system's].")
@click.option("-state-dir", "--state-dir", "state_dir", envvar="PULLER_STATE_DIR",
              default=constants.DEFAULT_STATE_DIR, show_default=True,
              type=click.Path(file_okay=False),
              help="puller's own state: the API key, the generated cluster secret, the "
                   "history, the images it pulled, its docker config for Google registries.")
@click.option("-join", "--join", "join", multiple=True, envvar="PULLER_JOIN",
              help="A peer to join, host[:port] (default port 7946); repeatable, or a comma list.")
@click.option("-cluster", "--cluster", "cluster_name", default=constants.DEFAULT_CLUSTER,
              show_default=True, envvar="PULLER_CLUSTER",
              help="The cluster's name: clusters with other names on the same LAN stay apart.")
@click.option("-secret-file", "--secret-file", "secret_file", envvar="PULLER_SECRET_FILE",
              type=click.Path(dir_okay=False), default=None,
              help="File holding the cluster secret, the same on every node (or set "
                   "PULLER_SECRET). Without one, a secret is generated into -state-dir "
                   "(cluster.secret, shared by the daemons of this host) and only loopback "
                   "peers are talked to.")
@click.option("-zeroconf", "--zeroconf", "zeroconf", default=True, show_default=True,
              envvar="PULLER_ZEROCONF", type=click.BOOL,
              help="Find peers on the LAN with mDNS (-zeroconf=false turns it off).")
@click.option("-bind", "--bind", "bind", envvar="PULLER_BIND", default=None,
              help="Address of the sync port [default: 0.0.0.0 with an explicit secret, else "
                   "127.0.0.1].")
@click.option("-store", "--store", "store_url", envvar="PULLER_STORE", default=None,
              help="Keep the definitions in etcd instead of the gossip: "
                   "etcd://HOST:PORT[,HOST:PORT...]/PREFIX (gossip and zeroconf are then off; "
                   "user and password from PULLER_STORE_USER and PULLER_STORE_PASSWORD).")
@click.option("-store-ca", "--store-ca", "store_ca", envvar="PULLER_STORE_CA", default=None,
              type=click.Path(dir_okay=False), help="CA file of the store's TLS (https).")
@click.option("-store-cert", "--store-cert", "store_cert", envvar="PULLER_STORE_CERT",
              default=None, type=click.Path(dir_okay=False),
              help="Client certificate for the store's TLS (with -store-key).")
@click.option("-store-key", "--store-key", "store_key", envvar="PULLER_STORE_KEY", default=None,
              type=click.Path(dir_okay=False), help="Client key for the store's TLS.")
@click.option("-name-template", "--name-template", "name_template", default="{service}",
              show_default=True, envvar="PULLER_NAME_TEMPLATE",
              help="Container names: {service} and {node}; {node}-{service} lets several nodes "
                   "share one Docker engine.")
@click.option("-google-registry", "--google-registry", "google_registries", multiple=True,
              envvar="PULLER_GOOGLE_REGISTRY",
              help="A registry host (glob) to log in to with Google credentials, besides "
                   "gcr.io, *.gcr.io and *-docker.pkg.dev; repeatable.")
@click.option("-notify", "--notify", "notify", multiple=True, envvar="PULLER_NOTIFY",
              help="An Apprise URL to tell of deploys, rollbacks and faults (json://, ntfy://, "
                   "slack://, mailto://, ...); repeatable, or a list split by spaces or commas.")
@click.option("-metrics", "--metrics", "metrics", envvar="PULLER_METRICS", default=None,
              help="ADDR:PORT to serve Prometheus metrics on, at /metrics [default: off].")
@click.option("-keep-images", "--keep-images", "keep_images",
              default=constants.DEFAULT_KEEP_IMAGES, show_default=True,
              envvar="PULLER_KEEP_IMAGES", type=click.IntRange(min=0),
              help="Image retention: once a deploy proves itself, remove the images puller "
                   "pulled that no container uses and that are not among the last N releases "
                   "of a service (rollback to those needs no registry). Images puller did not "
                   "pull are never removed. 0 turns retention off.")
@click.version_option(__version__, "-version", "--version", prog_name="puller")
@click.pass_context
def cli(ctx: click.Context, daemon: bool, node: str, directory: str, port: int,
        interval: float, pull_every: int, verbose: bool, apikey_file: str | None,
        apikey: str | None, hook_key_file: str | None, api_addr: str | None,
        api_hosts: tuple[str, ...], api_cert: str | None, api_cert_key: str | None,
        api_insecure: bool, api_url: str | None, api_ca: str | None, state_dir: str,
        join: tuple[str, ...], cluster_name: str, secret_file: str | None, zeroconf: bool,
        bind: str | None, store_url: str | None, store_ca: str | None,
        store_cert: str | None, store_key: str | None, name_template: str,
        google_registries: tuple[str, ...], notify: tuple[str, ...],
        metrics: str | None, keep_images: int) -> None:
    """puller: keeps Docker containers deployed from YAML service definitions.

    \b
    Run the daemon on a node:
      puller -d -node=box-1 -dir=/var/puller
    """
    on_command_line = apikey and ctx.get_parameter_source("apikey") is ParameterSource.COMMANDLINE
    if ctx.invoked_subcommand is not None:
        if on_command_line:
            click.echo(f"warning: {APIKEY_VISIBLE}", err=True)
        ctx.obj = ClientSettings(api_url or f"http://127.0.0.1:{port + 1}", apikey or None,
                                 apikey_file, state_dir, api_ca)
        return
    if not daemon:
        click.echo(ctx.get_help())
        return
    if not node.strip():
        raise click.BadParameter("the node name must not be empty", param_hint="-node")
    _setup_logging(verbose)
    import logging
    import os

    from .daemon import Config  # keeps `puller --help` fast
    from .images.gcloud import DEFAULT_GOOGLE_REGISTRIES

    if api_cert_key and not api_cert:
        raise click.BadParameter("a key without -api-cert", param_hint="-api-cert-key")
    if on_command_line:
        logging.getLogger("puller").warning("%s", APIKEY_VISIBLE)
    if apikey and apikey_file:
        logging.getLogger("puller").warning("-apikey-file and -apikey (or PULLER_APIKEY) both "
                                            "given: the file wins")
    run_daemon(Config(node=node, directory=directory, port=port, interval=interval,
                      pull_every=pull_every, state_dir=state_dir,
                      google_registries=DEFAULT_GOOGLE_REGISTRIES + tuple(google_registries),
                      apikey=_key("-apikey-file", apikey_file, apikey, "-apikey"),
                      hook_key=_key("-hook-key-file", hook_key_file,
                                    os.environ.get("PULLER_HOOK_KEY"), "PULLER_HOOK_KEY"),
                      api_addr=api_addr,
                      api_hosts=_listed(api_hosts), api_cert=api_cert, api_cert_key=api_cert_key,
                      api_insecure=api_insecure, name_template=_name_template(name_template),
                      cluster=cluster_name, secret=_secret(secret_file),
                      join=tuple(seed for item in join for seed in item.split(",") if seed.strip()),
                      zeroconf=zeroconf, bind=bind,
                      store=_store(store_url, store_ca, store_cert, store_key),
                      notify=_urls(notify), metrics=metrics, keep_images=keep_images))


def _store(url: str | None, ca: str | None, cert: str | None, key: str | None):
    """The etcd store's settings, or None for the gossip."""
    import os

    if not url:
        return None
    from .cluster.storeurl import StoreUrlError, parse_store_url

    try:
        return parse_store_url(url, ca=ca, cert=cert, key=key,
                               user=os.environ.get("PULLER_STORE_USER"),
                               password=os.environ.get("PULLER_STORE_PASSWORD"))
    except StoreUrlError as exc:
        raise click.BadParameter(str(exc), param_hint="-store") from None


APIKEY_VISIBLE = ("-apikey on the command line is visible to every user of this host (ps, "
                  "/proc/PID/cmdline); use -apikey-file or PULLER_APIKEY")


def _listed(values: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated values, each possibly a comma list."""
    return tuple(part.strip() for item in values for part in item.split(",") if part.strip())


def _urls(values: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated URLs, each possibly a list split by spaces or commas (PULLER_NOTIFY)."""
    return tuple(dict.fromkeys(part for item in values
                               for part in item.replace(",", " ").split()))


def _key(option: str, path: str | None, value: str | None, value_from: str) -> str | None:
    """A key from the file of ``option`` (which wins) or ``value`` (named ``value_from``)."""
    from .control.keys import ApiKeyError, configured_key

    try:
        return configured_key(path, value, value_from)
    except ApiKeyError as exc:
        raise click.BadParameter(str(exc), param_hint=option if path else value_from) from None


def _name_template(template: str) -> str:
    import re

    try:
        sample = template.format(service="web", node="box-1")
    except (KeyError, IndexError, ValueError) as exc:
        raise click.BadParameter(f"{template!r}: {exc}; use {{service}} and {{node}}",
                                 param_hint="-name-template") from None
    if "{service}" not in template or not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", sample):
        raise click.BadParameter(f"{template!r} must contain {{service}} and give a valid "
                                 "container name", param_hint="-name-template")
    return template


def _secret(path: str | None) -> bytes | None:
    """The explicit cluster secret, or None: the daemon then uses a generated one."""
    import logging
    import os
    import stat

    if path:
        try:
            with open(path, "rb") as handle:
                secret = handle.read().strip()
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}",
                                     param_hint="-secret-file") from None
        if not secret:
            raise click.BadParameter(f"{path} is empty", param_hint="-secret-file")
        if mode & 0o077:
            logging.getLogger("puller").warning(
                "the cluster secret %s is readable by other users (mode %o), who can then make "
                "every node run any container as root: chmod 600 it", path, mode)
        return secret
    value = os.environ.get("PULLER_SECRET", "").strip()
    return value.encode() if value else None


def check_state_dir(path: str) -> None:
    """Make -state-dir (0700) if missing and prove it writable with a scratch
    file; a ClickException naming it and what to do otherwise."""
    import os
    import tempfile

    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".puller-check-"):
            pass
    except OSError as exc:
        raise click.ClickException(
            f"-state-dir {path} cannot be written ({exc.strerror or exc}): puller keeps its API "
            "key, cluster secret and history there; give a directory this user may write, "
            "or run as root") from None


def run_daemon(config: "Config") -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    import logging

    from .daemon import Daemon

    log = logging.getLogger("puller")
    check_state_dir(config.state_dir)
    daemon_ = Daemon(config)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        daemon_.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # the signal may land on any thread: it must end the loop's wait at once
    signal.set_wakeup_fd(daemon_.wakeup_fd(), warn_on_full_buffer=False)
    try:
        daemon_.run()
    except PullerError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot run: {exc}") from None
    finally:
        signal.set_wakeup_fd(-1)
        daemon_.close()


for _command in CLIENT_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="puller")
