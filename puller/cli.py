"""The ``puller`` command: ``puller -d ...`` runs the daemon.

The only module that imports click and configures logging; it alone turns
``PullerError`` into a message and an exit code. The Go-style single-dash
flags of the original (``-node=box-1``) work, and so do ``--node box-1`` and
``PULLER_NODE``.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

import click

from . import __version__, constants
from .errors import PullerError

if TYPE_CHECKING:
    from .daemon import Config

log = logging.getLogger("puller")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("sh", "watchdog", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-help", "--help", "-h"], "max_content_width": 100},
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
@click.option("-apikey", "--apikey", "apikey", envvar="PULLER_APIKEY", default=None,
              help="API key (sent as Authorization: Bearer); with it the API may listen on "
                   "every address.")
@click.option("-api-addr", "--api-addr", "api_addr", envvar="PULLER_API_ADDR", default=None,
              help="Address the HTTP API listens on [default: 127.0.0.1, or 0.0.0.0 with an "
                   "API key].")
@click.option("-api", "--api", "api_url", envvar="PULLER_API", default=None,
              help="URL of the daemon's API for the client commands [default: "
                   "http://127.0.0.1:<port+1>].")
@click.option("-state-dir", "--state-dir", "state_dir", envvar="PULLER_STATE_DIR",
              default=constants.DEFAULT_STATE_DIR, show_default=True,
              type=click.Path(file_okay=False),
              help="puller's own state: its docker config for Google registries.")
@click.option("-google-registry", "--google-registry", "google_registries", multiple=True,
              envvar="PULLER_GOOGLE_REGISTRY",
              help="A registry host (glob) to log in to with Google credentials, besides "
                   "gcr.io, *.gcr.io and *-docker.pkg.dev; repeatable.")
@click.version_option(__version__, "-version", "--version", prog_name="puller")
@click.pass_context
def cli(ctx: click.Context, daemon: bool, node: str, directory: str, port: int,
        interval: float, pull_every: int, verbose: bool, apikey: str | None,
        api_addr: str | None, api_url: str | None, state_dir: str,
        google_registries: tuple[str, ...]) -> None:
    """puller: keeps Docker containers deployed from YAML service definitions.

    \b
    Run the daemon on a node:
      puller -d -node=box-1 -dir=/var/puller
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = ClientSettings(api_url or f"http://127.0.0.1:{port + 1}", apikey)
        return
    if not daemon:
        click.echo(ctx.get_help())
        return
    if not node.strip():
        raise click.BadParameter("the node name must not be empty", param_hint="-node")
    _setup_logging(verbose)
    from .daemon import Config  # keeps `puller --help` fast
    from .gcloud import DEFAULT_GOOGLE_REGISTRIES

    run_daemon(Config(node=node, directory=directory, port=port, interval=interval,
                      pull_every=pull_every, state_dir=state_dir,
                      google_registries=DEFAULT_GOOGLE_REGISTRIES + tuple(google_registries),
                      apikey=apikey or None, api_addr=api_addr))


def run_daemon(config: "Config") -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    from .daemon import Daemon

    daemon_ = Daemon(config)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        daemon_.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon_.run()
    except PullerError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot run: {exc}") from None
    finally:
        daemon_.close()


@dataclass(frozen=True)
class ClientSettings:
    api_url: str
    apikey: str | None

    def client(self):
        from .client import Client

        return Client(self.api_url, self.apikey)


def _call(ctx: click.Context, method: str, path: str, body=None):
    try:
        return ctx.obj.client().call(method, path, body)
    except PullerError as exc:
        raise click.ClickException(str(exc)) from None


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@cli.command("pull")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
@click.pass_context
def pull_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Check NAME's image in the registry now, and deploy it if it moved."""
    result = _call(ctx, "POST", f"/v1/services/{name}/pull")
    if as_json:
        _echo_json(result)
    else:
        digest = (result.get("registry_digest") or "unknown digest")[:19]
        what = "; ".join(f"{s['action']}: {s['reason']}" for s in result["steps"]) or "nothing to do"
        click.echo(f"{name} on {result['node']}: {result['image']} is {digest} in the registry; "
                   f"{'pulled; ' if result['pulled'] else ''}{what}")
    if result.get("errors"):
        raise click.ClickException("; ".join(result["errors"]))


def main() -> None:
    cli(prog_name="puller")
