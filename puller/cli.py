"""The ``puller`` command: ``puller -d ...`` runs the daemon.

The only module that imports click and configures logging; it alone turns
``PullerError`` into a message and an exit code. The Go-style single-dash
flags of the original (``-node=box-1``) work, and so do ``--node box-1`` and
``PULLER_NODE``.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import click

from . import __version__, constants
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
              help="puller's own state: its docker config for Google registries, the history, "
                   "the generated cluster secret.")
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
@click.version_option(__version__, "-version", "--version", prog_name="puller")
@click.pass_context
def cli(ctx: click.Context, daemon: bool, node: str, directory: str, port: int,
        interval: float, pull_every: int, verbose: bool, apikey: str | None,
        api_addr: str | None, api_url: str | None, state_dir: str,
        join: tuple[str, ...], cluster_name: str, secret_file: str | None, zeroconf: bool,
        bind: str | None, store_url: str | None, store_ca: str | None,
        store_cert: str | None, store_key: str | None, name_template: str,
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
    from .images.gcloud import DEFAULT_GOOGLE_REGISTRIES

    run_daemon(Config(node=node, directory=directory, port=port, interval=interval,
                      pull_every=pull_every, state_dir=state_dir,
                      google_registries=DEFAULT_GOOGLE_REGISTRIES + tuple(google_registries),
                      apikey=apikey or None, api_addr=api_addr,
                      name_template=_name_template(name_template),
                      cluster=cluster_name, secret=_secret(secret_file),
                      join=tuple(seed for item in join for seed in item.split(",") if seed.strip()),
                      zeroconf=zeroconf, bind=bind,
                      store=_store(store_url, store_ca, store_cert, store_key)))


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


def run_daemon(config: "Config") -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    import logging

    from .daemon import Daemon

    log = logging.getLogger("puller")
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


class ClientSettings:
    """Where the client commands find the daemon (not a dataclass: startup time)."""

    def __init__(self, api_url: str, apikey: str | None):
        self.api_url = api_url
        self.apikey = apikey

    def client(self):
        from .control.client import Client

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
@click.option("--all", "everywhere", is_flag=True, help="Ask every node of the cluster.")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
@click.pass_context
def pull_command(ctx: click.Context, name: str, everywhere: bool, as_json: bool) -> None:
    """Check NAME's image in the registry now, and deploy it if it moved."""
    if everywhere:
        result = _call(ctx, "POST", f"/v1/services/{name}/pull-all")
        if as_json:
            return _echo_json(result)
        errors = []
        for node in result["nodes"]:
            if node.get("error"):
                errors.append(f"{node.get('node') or node.get('addr')}: {node['error']}")
            elif node.get("runs_here"):
                what = "; ".join(f"{s['action']}: {s['reason']}" for s in node["steps"])
                click.echo(f"{node['node']}: {'pulled; ' if node['pulled'] else ''}{what}")
                errors += [f"{node['node']}: {e}" for e in node.get("errors", [])]
            else:
                click.echo(f"{node['node']}: does not run {name}")
        if errors:
            raise click.ClickException("; ".join(errors))
        return
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


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _short(digest: str | None) -> str:
    return digest[7:19] if digest else "-"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@cli.command("ls")
@json_option
@click.pass_context
def ls_command(ctx: click.Context, as_json: bool) -> None:
    """List the services defined (and which run on this node)."""
    result = _call(ctx, "GET", "/v1/services")
    if as_json:
        return _echo_json(result)
    _table([[s["name"], s["repo"], s.get("digest") and _short(s["digest"]) or s["tag"],
             s["node"] or "*", "yes" if s["runs_here"] else "no"] for s in result["services"]],
           ["SERVICE", "REPO", "TAG", "NODE", "HERE"])
    for error in result["errors"]:
        click.echo(f"warning: {error}", err=True)


@cli.command("status")
@json_option
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Each node's services: state, image, running and registry digests, last error."""
    result = _call(ctx, "GET", "/v1/cluster")
    if as_json:
        return _echo_json(result)
    rows = []
    for node in result["nodes"]:
        for name, s in sorted(node["services"].items()):
            rows.append([node["node"], name, s["state"], s["image"], _short(s["running_digest"]),
                         _short(s["registry_digest"]), (s["error"] or "")[:80]])
    _table(rows, ["NODE", "SERVICE", "STATE", "IMAGE", "RUNNING", "REGISTRY", "ERROR"])


@cli.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
@click.pass_context
def apply_command(ctx: click.Context, files: tuple[str, ...], as_json: bool) -> None:
    """Send definition FILES to the daemon, which validates and writes them."""
    import os

    import yaml

    from .control.client import DaemonUnreachable

    failed = []
    results = []
    for path in files:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            data = yaml.safe_load(raw)
        except (OSError, yaml.YAMLError) as exc:
            failed.append(f"{path}: {exc}")
            continue
        name = data.get("name") if isinstance(data, dict) else None
        name = name or os.path.splitext(os.path.basename(path))[0]
        try:
            result = ctx.obj.client().call("PUT", f"/v1/services/{name}", raw=raw,
                                           content_type="application/yaml")
        except DaemonUnreachable as exc:
            raise click.ClickException(str(exc)) from None
        except PullerError as exc:
            failed.append(f"{path}: {exc}")
            continue
        results.append(result)
        if not as_json:
            click.echo(f"{name}: written to {result['path']}"
                       f"{'' if result['runs_here'] else ' (does not run on this node)'}")
    if as_json:
        _echo_json(results)
    if failed:
        raise click.ClickException("\n".join(failed))


@cli.command("rm")
@click.argument("name")
@json_option
@click.pass_context
def rm_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete service NAME's definition (its containers are removed)."""
    result = _call(ctx, "DELETE", f"/v1/services/{name}")
    _echo_json(result) if as_json else click.echo(f"{name}: removed")


@cli.command("tag")
@click.argument("name")
@click.argument("tag")
@json_option
@click.pass_context
def tag_command(ctx: click.Context, name: str, tag: str, as_json: bool) -> None:
    """Run tag TAG of NAME's image (and drop any digest pin)."""
    result = _call(ctx, "POST", f"/v1/services/{name}/tag", {"tag": tag})
    _echo_json(result) if as_json else click.echo(f"{name}: now {result['service']['tag']}")


@cli.command("rollback")
@click.argument("name")
@click.option("--to", "to", default=None, metavar="TAG|sha256:...",
              help="Roll back to this tag (the digest it ran here, when known) or digest.")
@json_option
@click.pass_context
def rollback_command(ctx: click.Context, name: str, to: str | None, as_json: bool) -> None:
    """Make NAME's previous revision current again, pinned to the digest that ran then."""
    result = _call(ctx, "POST", f"/v1/services/{name}/rollback", {"to": to} if to else None)
    if as_json:
        return _echo_json(result)
    service = result["service"]
    click.echo(f"{name}: now {service['tag']}"
               f"{' at ' + service['digest'] if service.get('digest') else ''}")


@cli.command("history")
@click.argument("name")
@json_option
@click.pass_context
def history_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """NAME's revisions on this node, newest last, with the digest each ran."""
    result = _call(ctx, "GET", f"/v1/services/{name}/history")
    if as_json:
        return _echo_json(result)
    _table([[_when(r["at"]), r["source"], r["node"], r["fields"]["tag"],
             _short(r["fields"].get("digest")), _short(r.get("digest"))]
            for r in result["revisions"]],
           ["WHEN", "SOURCE", "NODE", "TAG", "PINNED", "RAN"])


def main() -> None:
    cli(prog_name="puller")
