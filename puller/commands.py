"""The client side of the ``puller`` command: ls, status, apply, rm, tag,
rollback, history and pull talk to the local daemon's API.

Part of the CLI (``cli`` adds these commands to its group): it imports click,
and turns ``PullerError`` into a message and an exit code.
"""

from __future__ import annotations

import functools
import json

import click

from . import constants
from .errors import PullerError


class ClientSettings:
    """Where the client commands find the daemon and its key (not a dataclass:
    startup time)."""

    def __init__(self, api_url: str, apikey: str | None = None, apikey_file: str | None = None,
                 state_dir: str = constants.DEFAULT_STATE_DIR, ca: str | None = None):
        self.api_url = api_url
        self.apikey = apikey
        self.apikey_file = apikey_file
        self.state_dir = state_dir
        self.ca = ca

    def overridden(self, port: int | None = None, api_url: str | None = None,
                   state_dir: str | None = None, apikey_file: str | None = None,
                   ca: str | None = None) -> "ClientSettings":
        """These settings with the connection flags given after the subcommand."""
        url = api_url or (f"http://127.0.0.1:{port + 1}" if port is not None else self.api_url)
        return ClientSettings(url, self.apikey, apikey_file or self.apikey_file,
                              state_dir or self.state_dir, ca or self.ca)

    def client(self):
        from .control.client import Client
        from .control.keys import client_key

        return Client(self.api_url, client_key(self.api_url, self.apikey, self.apikey_file,
                                               self.state_dir), ca=self.ca)


def _client(ctx: click.Context):
    try:
        return ctx.obj.client()
    except PullerError as exc:
        raise click.ClickException(str(exc)) from None


def _call(ctx: click.Context, method: str, path: str, body=None):
    client = _client(ctx)
    try:
        return client.call(method, path, body)
    except PullerError as exc:
        raise click.ClickException(str(exc)) from None


def _service_path(name: str, *rest: str) -> str:
    """The API path of service ``name``: a name the definitions would refuse is refused here."""
    from .control.client import service_path

    try:
        return service_path(name, *rest)
    except PullerError as exc:
        raise click.ClickException(str(exc)) from None


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


_CONNECTION_OPTIONS = (
    click.option("-port", "--port", "port", type=click.IntRange(1, 65534), default=None,
                 help="The daemon's cluster sync port; its API is on port+1 [default: the "
                      "one before the subcommand, else 7946]."),
    click.option("-api", "--api", "api_url", default=None,
                 help="URL of the daemon's API (as before the subcommand)."),
    click.option("-state-dir", "--state-dir", "state_dir", default=None,
                 type=click.Path(file_okay=False),
                 help="The local daemon's state directory, where its API key is read."),
    click.option("-apikey-file", "--apikey-file", "apikey_file", default=None,
                 type=click.Path(dir_okay=False), help="File holding the API key."),
    click.option("-api-ca", "--api-ca", "api_ca", default=None, type=click.Path(dir_okay=False),
                 help="CA file trusted for an https -api."),
)


def connection_options(command):
    """The connection flags, accepted after the subcommand too: each given
    there overrides the group's value (``ctx.obj``), the others stay."""

    @functools.wraps(command)
    def with_connection(*args, port=None, api_url=None, state_dir=None, apikey_file=None,
                        api_ca=None, **kwargs):
        ctx = click.get_current_context()
        if any(value is not None for value in (port, api_url, state_dir, apikey_file, api_ca)):
            ctx.obj = ctx.obj.overridden(port, api_url, state_dir, apikey_file, api_ca)
        return command(*args, **kwargs)

    for option in reversed(_CONNECTION_OPTIONS):
        with_connection = option(with_connection)
    return with_connection


@click.command("pull")
@click.argument("name")
@click.option("-all", "--all", "everywhere", is_flag=True, help="Ask every node of the cluster.")
@click.option("-no-wait", "--no-wait", "no_wait", is_flag=True,
              help="With --all: answer at once, without waiting for NAME's rollout to end.")
@click.option("-json", "--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
@connection_options
@click.pass_context
def pull_command(ctx: click.Context, name: str, everywhere: bool, no_wait: bool,
                 as_json: bool) -> None:
    """Check NAME's image in the registry now, and deploy it if it moved. With
    --all and a rollout, wait for the rollout to end: exit 0 when every node
    runs the new release."""
    if everywhere:
        path = _service_path(name, "pull-all") + ("?wait=0" if no_wait else "")
        result = _call(ctx, "POST", path)
        if as_json:
            _echo_json(result)
            if result.get("rollout") and not result["rollout"].get("ok"):
                ctx.exit(1)
            return
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
        if result.get("rollout"):
            errors = _rollout_outcome(name, result["rollout"])
        if errors:
            raise click.ClickException("; ".join(errors))
        return
    result = _call(ctx, "POST", _service_path(name, "pull"))
    if as_json:
        _echo_json(result)
    else:
        digest = (result.get("registry_digest") or "unknown digest")[:19]
        what = "; ".join(f"{s['action']}: {s['reason']}" for s in result["steps"]) or "nothing to do"
        click.echo(f"{name} on {result['node']}: {result['image']} is {digest} in the registry; "
                   f"{'pulled; ' if result['pulled'] else ''}{what}")
    if result.get("errors"):
        raise click.ClickException("; ".join(result["errors"]))


@click.command("approve")
@click.argument("name")
@click.option("-all", "--all", "everywhere", is_flag=True,
              help="Ask every node of the cluster to deploy the image that waits there.")
@click.option("-json", "--json", "as_json", is_flag=True, help="Print the daemon's JSON answer.")
@connection_options
@click.pass_context
def approve_command(ctx: click.Context, name: str, everywhere: bool, as_json: bool) -> None:
    """Deploy the new image of NAME that waits for approval (update: manual or notify)."""
    if not everywhere:
        result = _call(ctx, "POST", _service_path(name, "approve"))
        if as_json:
            _echo_json(result)
        else:
            click.echo(_approved_line(name, result))
        if result.get("errors"):
            raise click.ClickException("; ".join(result["errors"]))
        return
    result = _call(ctx, "POST", _service_path(name, "approve-all"))
    if as_json:
        _echo_json(result)
    errors, approved = [], 0
    for node in result["nodes"]:
        where = node.get("node") or node.get("addr")
        if node.get("error"):
            errors.append(f"{where}: {node['error']}")
            continue
        approved += bool(node.get("approved"))
        errors += [f"{where}: {error}" for error in node.get("errors", [])]
        if not as_json:
            click.echo(_approved_line(name, node) if node.get("approved") else
                       f"{where}: {node.get('reason') or 'does not run ' + name}")
    if errors:
        raise click.ClickException("; ".join(errors))
    if not approved:
        raise click.ClickException(f"nothing to approve: no new image of {name} waits on any "
                                   "node reached")


def _approved_line(name: str, result: dict) -> str:
    what = "; ".join(f"{s['action']}: {s['reason']}" for s in result.get("steps", []))
    update = result.get("update") or {}
    return (f"{name} on {result['node']}: approved {update.get('running', '?')} → "
            f"{update.get('available', '?')}; {what or 'nothing done'}")
def _rollout_outcome(name: str, rollout: dict) -> list[str]:
    """Say how NAME's rollout ended; what went wrong (nothing when every node runs it)."""
    release = _short((rollout.get("release") or {}).get("digest"))
    nodes = rollout.get("nodes") or {}
    if rollout.get("ok"):
        click.echo(f"rollout of {name} ({release}): done on {', '.join(sorted(nodes))}")
        return []
    if rollout.get("held"):
        return [f"rollout of {name} ({release}) waits for approval on {node}: {why}"
                for node, why in sorted(rollout["held"].items())]
    if rollout.get("timed_out"):
        return [f"rollout of {name} ({release}) still going after "
                f"{rollout['timed_out']:g} s; `puller status` shows where it stands"]
    errors = [f"rollout of {name} ({release}) halted: {rollout['halted']}"] \
        if rollout.get("halted") else []
    back = sorted(n for n, item in nodes.items() if item.get("state") == "reverted")
    if back:
        errors.append(f"rolled back on {', '.join(back)}")
    errors += [f"{n}: {item.get('state')}" for n, item in sorted(nodes.items())
               if item.get("state") not in ("done", "reverted", "failed")]
    return errors


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


json_option = click.option("-json", "--json", "as_json", is_flag=True,
                           help="Print JSON, for scripts.")


@click.command("ls")
@json_option
@connection_options
@click.pass_context
def ls_command(ctx: click.Context, as_json: bool) -> None:
    """List the services defined (and which run on this node)."""
    result = _call(ctx, "GET", "/v1/services")
    if as_json:
        return _echo_json(result)
    _table([[s["name"], s["repo"], s.get("digest") and _short(s["digest"]) or s.get("tag")
             or f"track {s.get('track')}",
             s["node"] or "*", "yes" if s["runs_here"] else "no"] for s in result["services"]],
           ["SERVICE", "REPO", "TAG", "NODE", "HERE"])
    for error in result["errors"]:
        click.echo(f"warning: {error}", err=True)


@click.command("status")
@json_option
@click.option("-wide", "--wide", "wide", is_flag=True,
              help="Keep each error on its row, whole, instead of wrapping it.")
@connection_options
@click.pass_context
def status_command(ctx: click.Context, as_json: bool, wide: bool) -> None:
    """Each node's services: state, image, running and registry digests, last error
    (or the update that waits for approval)."""
    result = _call(ctx, "GET", "/v1/cluster")
    if as_json:
        return _echo_json(result)
    rows: list[list[str]] = []

    def add(row: list[str], error: str) -> None:
        import textwrap

        lines = [error] if wide else textwrap.wrap(error, ERROR_WIDTH, break_on_hyphens=False)
        rows.append([*row, lines[0] if lines else ""])
        rows.extend([*[""] * len(row), line] for line in lines[1:])

    for node in result["nodes"]:
        name = node.get("node") or node.get("addr")
        if node.get("error"):  # a peer that did not answer
            add([name, "-", "unreachable", "-", "-", "-"], node["error"])
        elif not node.get("services"):
            add([name, "-", "no services", "-", "-", "-"], "")
        for service, s in sorted(node.get("services", {}).items()):
            image = f"{s['image']} (track {s['track']})" if s.get("track") else s["image"]
            update = (s.get("update") or {}).get("message")  # a new image waits for a person
            add([name, service, s["state"], image, _short(s["running_digest"]),
                 _short(s["registry_digest"])], s["error"] or update or "")
    _table(rows, ["NODE", "SERVICE", "STATE", "IMAGE", "RUNNING", "REGISTRY", "ERROR"])
    _show_rollouts(result["nodes"])


def _show_rollouts(nodes: list[dict]) -> None:
    """Each rollout as the first node that knows it sees it: release, wave, the
    state of every node, and why it halted."""
    views: dict[str, dict] = {}
    for node in nodes:
        for service, rollout in sorted((node.get("rollouts") or {}).items()):
            views.setdefault(service, rollout.get("view") or {})
    rows = []
    for service, view in sorted(views.items()):
        release = view.get("release") or {}
        wave = view.get("wave")
        where = "ended" if view.get("ended") else f"{wave or '-'}/{len(view.get('waves') or [])}"
        states = ", ".join(f"{name} {item['state']}" for name, item in sorted(
            (view.get("nodes") or {}).items(), key=lambda kv: (kv[1].get("wave") or 0, kv[0])))
        rows.append([service, _short(release.get("digest")), where, states or "-"])
        if view.get("halted"):
            rows.append(["", "", "", f"halted: {view['halted']}"])
    if rows:
        click.echo("")
        _table(rows, ["ROLLOUT", "RELEASE", "WAVE", "NODES"])


ERROR_WIDTH = 80  # status wraps an error at this width (-wide: never)


@click.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
@connection_options
@click.pass_context
def apply_command(ctx: click.Context, files: tuple[str, ...], as_json: bool) -> None:
    """Send definition FILES to the daemon, which validates and writes them."""
    from .control.client import DaemonUnreachable, service_path

    client = _client(ctx)
    failed = []
    results = []
    for path in files:
        try:
            name, raw = _applicable(path)
            result = client.call("PUT", service_path(name), raw=raw,
                                 content_type="application/yaml")
        except DaemonUnreachable as exc:
            raise click.ClickException(str(exc)) from None
        except PullerError as exc:
            failed.append(str(exc) if str(exc).startswith(path) else f"{path}: {exc}")
            continue
        results.append(result)
        if not as_json:
            click.echo(f"{name}: written to {result['path']}"
                       f"{'' if result['runs_here'] else ' (does not run on this node)'}")
    if as_json:
        _echo_json(results)
    if failed:
        raise click.ClickException("\n".join(failed))


def _applicable(path: str) -> tuple[str, bytes]:
    """The service name and bytes of file ``path``, checked here by the rules of
    the directory, so that a problem is reported at this file's own line (the
    daemon's message would cite the file it writes). ``PullerError`` otherwise."""
    import os

    from .control.client import service_path
    from .node.definitions import parse_definition, read_text

    text = read_text(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    service_path(stem)  # a file name no service can have: refused before anything is sent
    parse_definition(text, path, default_name=stem)
    return stem, text.encode("utf-8")


@click.command("rm")
@click.argument("name")
@json_option
@connection_options
@click.pass_context
def rm_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete service NAME's definition (its containers are removed)."""
    result = _call(ctx, "DELETE", _service_path(name))
    _echo_json(result) if as_json else click.echo(f"{name}: removed")


@click.command("tag")
@click.argument("name")
@click.argument("tag")
@json_option
@connection_options
@click.pass_context
def tag_command(ctx: click.Context, name: str, tag: str, as_json: bool) -> None:
    """Run tag TAG of NAME's image (and drop any digest pin)."""
    result = _call(ctx, "POST", _service_path(name, "tag"), {"tag": tag})
    _echo_json(result) if as_json else click.echo(f"{name}: now {result['service']['tag']}")


@click.command("rollback")
@click.argument("name")
@click.option("-to", "--to", "to", default=None, metavar="TAG|sha256:...",
              help="Roll back to this tag (the digest it ran here, when known) or digest.")
@json_option
@connection_options
@click.pass_context
def rollback_command(ctx: click.Context, name: str, to: str | None, as_json: bool) -> None:
    """Make NAME's previous revision current again, pinned to the digest that ran then."""
    if to and to.startswith("sha256:"):
        from .node.definitions import DIGEST_RE

        if not DIGEST_RE.match(to):
            raise click.BadParameter(f"{to!r} is not a digest: sha256: and 64 hex digits "
                                     f"(`puller history {name}` lists those that ran)",
                                     param_hint="--to")
    result = _call(ctx, "POST", _service_path(name, "rollback"), {"to": to} if to else None)
    if as_json:
        return _echo_json(result)
    service = result["service"]
    click.echo(f"{name}: now {service['tag']}"
               f"{' at ' + service['digest'] if service.get('digest') else ''}")


@click.command("history")
@click.argument("name")
@json_option
@connection_options
@click.pass_context
def history_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """NAME's revisions on this node, newest last, with the digest each ran."""
    result = _call(ctx, "GET", _service_path(name, "history"))
    if as_json:
        return _echo_json(result)
    _table([[_when(r["at"]), r["source"], r["node"], r["fields"].get("tag", "-"),
             _short(r["fields"].get("digest")), _short(r.get("digest"))]
            for r in result["revisions"]],
           ["WHEN", "SOURCE", "NODE", "TAG", "PINNED", "RAN"])


CLIENT_COMMANDS = (pull_command, approve_command, ls_command, status_command, apply_command,
                   rm_command, tag_command, rollback_command, history_command)
