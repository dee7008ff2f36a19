"""The one module that speaks to the docker CLI (through the ``sh`` package).

Every call returns small typed values and turns a failed command into a
``DockerError`` carrying the argv, exit code and stderr. The ``docker`` found
on PATH is used, as a user would.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from typing import Iterable, Sequence

import sh

from .. import constants
from ..errors import DockerError, ImageReferenceError
from ..images.reference import Reference
from .container import PS_FORMAT, Container, Image, from_ps_row

log = logging.getLogger(__name__)

NAME_IN_USE = "is already in use by container"


class Docker:
    """The docker CLI. ``calls`` counts the commands run (for benchmarks and tests)."""

    def __init__(self, executable: str = "docker"):
        self.executable = executable
        self.calls = 0
        self.counts: Counter[str] = Counter()  # calls by docker subcommand
        self._lock = threading.Lock()

    def _run(self, *args: str, timeout: float | None = constants.DOCKER_TIMEOUT,
             ok_codes: Sequence[int] = (0,), stdin: str | None = None) -> tuple[int, str, str]:
        argv = [self.executable, *args]
        with self._lock:
            self.calls += 1
            self.counts[_subcommand(args)] += 1
        log.debug("docker %s", " ".join(args))
        try:
            command = sh.Command(self.executable)
        except sh.CommandNotFound:
            raise DockerError(argv, 127, f"{self.executable}: command not found; install docker") from None
        # The timeout is a timer that kills the process: sh's own _timeout polls
        # every 0.1 s, which added ~80 ms to every docker call (measured).
        running = command(*args, _tty_out=False, _ok_code=list(ok_codes), _in=stdin,
                          _bg=True, _bg_exc=False)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            running.kill()

        timer = threading.Timer(timeout, expire) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            result = running.wait()
        except sh.ErrorReturnCode as exc:
            if timed_out.is_set():
                raise DockerError(argv, -1, f"timed out after {timeout:.0f} s") from None
            raise DockerError(argv, exc.exit_code, _text(exc.stderr)) from None
        finally:
            if timer is not None:
                timer.cancel()
        return result.exit_code, _text(result.stdout), _text(result.stderr)

    # Facts -----------------------------------------------------------------

    def container_ids(self, node: str) -> list[str]:
        """Ids of every container (any state) labelled as this node's."""
        _, out, _ = self._run(
            "ps", "--all", "--quiet", "--no-trunc",
            "--filter", f"label={constants.LABEL_NODE}={node}",
        )
        return out.split()

    def inspect_containers(self, ids: Sequence[str]) -> list[Container]:
        """One batched ``docker inspect``; containers gone meanwhile are skipped."""
        if not ids:
            return []
        code, out, err = self._run("container", "inspect", *ids, ok_codes=(0, 1))
        items = json.loads(out) if out.strip() else []
        if code != 0 and not items and "No such" not in err:
            raise DockerError([self.executable, "container", "inspect", *ids], code, err)
        return [Container.from_inspect(item) for item in items]

    def containers(self, node: str) -> list[Container]:
        """This node's containers: one ``docker ps`` as a rule. Only while a
        container is kept aside (a predecessor, or a start-first candidate: a new
        container on probation), or if ps's output is not understood, a batched
        ``docker inspect`` adds what ps cannot tell."""
        _, out, _ = self._run(
            "ps", "--all", "--no-trunc", "--filter", f"label={constants.LABEL_NODE}={node}",
            "--format", PS_FORMAT,
        )
        rows = [from_ps_row(line) for line in out.splitlines() if line.strip()]
        if any(row is None for row in rows) or any(row.is_aside for row in rows):
            return self.inspect_containers(self.container_ids(node))
        return rows

    def inspect_container(self, name_or_id: str) -> Container | None:
        found = self.inspect_containers([name_or_id])
        return found[0] if found else None

    def images(self, refs: Iterable[str]) -> dict[str, Image | None]:
        """One batched ``docker image inspect``: each ref → its local image, or None."""
        refs = sorted(set(refs))
        if not refs:
            return {}
        code, out, err = self._run("image", "inspect", *refs, ok_codes=(0, 1))
        items = json.loads(out) if out.strip() else []
        if code != 0 and not items and "No such" not in err:
            raise DockerError([self.executable, "image", "inspect", *refs], code, err)
        images = [Image.from_inspect(item) for item in items]
        return {ref: _find_image(ref, images) for ref in refs}

    def images_by_id(self, ids: Iterable[str]) -> dict[str, Image]:
        """One batched ``docker image inspect`` of image ids; those that exist."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        code, out, err = self._run("image", "inspect", *ids, ok_codes=(0, 1))
        items = json.loads(out) if out.strip() else []
        if code != 0 and not items and "No such" not in err:
            raise DockerError([self.executable, "image", "inspect", *ids], code, err)
        return {image.id: image for image in (Image.from_inspect(item) for item in items)}

    def image_ids_in_use(self) -> set[str]:
        """The image ids of every container on the engine, running or stopped,
        puller's or not: one ``docker ps`` and one batched ``docker inspect``."""
        _, out, _ = self._run("ps", "--all", "--quiet", "--no-trunc")
        ids = out.split()
        if not ids:
            return set()
        code, out, err = self._run("container", "inspect", "--format", "{{.Image}}", *ids,
                                   ok_codes=(0, 1))
        if code != 0 and "No such" not in err:  # only a container gone meanwhile is fine
            raise DockerError([self.executable, "container", "inspect", *ids], code, err)
        return {line.strip() for line in out.splitlines() if line.strip()}

    # Changes ---------------------------------------------------------------

    def pull(self, ref: str, config_dir: str | None = None) -> None:
        """``docker pull``; ``config_dir`` picks another docker config (credentials)."""
        config = ["--config", config_dir] if config_dir else []
        self._run(*config, "pull", "--quiet", ref, timeout=constants.PULL_TIMEOUT)

    def remove_image(self, image_id: str) -> None:
        """``docker image rm`` without force: the engine refuses an image a
        container uses or that has several tags (a DockerError)."""
        self._run("image", "rm", image_id)

    def tag(self, source: str, target: str) -> None:
        self._run("tag", source, target)

    def login(self, registry: str, username: str, password: str, config_dir: str) -> None:
        """``docker login`` into ``config_dir`` (never the user's own config)."""
        self._run("--config", config_dir, "login", "--username", username,
                  "--password-stdin", f"https://{registry}", stdin=password)

    def run(self, args: Sequence[str]) -> str:
        """``docker <args>`` (a ``run ... --detach`` command); returns the new container id."""
        _, out, _ = self._run(*args)
        lines = out.split()
        return lines[-1] if lines else ""

    def rename(self, container_id: str, name: str) -> None:
        self._run("rename", container_id, name)

    def stop(self, container_id: str) -> None:
        args = ["stop"]
        if constants.STOP_TIMEOUT is not None:
            args += ["--time", str(int(constants.STOP_TIMEOUT))]
        self._run(*args, container_id)

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def remove(self, container_id: str) -> None:
        """Remove a container, killing it if it still runs."""
        self._run("rm", "--force", container_id)


def _subcommand(args: Sequence[str]) -> str:
    """``("--config", "d", "image", "inspect", ...)`` → "image inspect"."""
    words = list(args)
    while words[:1] == ["--config"]:
        words = words[2:]
    if words[:1] in (["container"], ["image"]) and len(words) > 1:
        return " ".join(words[:2])
    return words[0] if words else "?"


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def _find_image(ref: str, images: Sequence[Image]) -> Image | None:
    try:
        wanted = Reference.parse(ref)
    except ImageReferenceError:
        return None
    for image in images:
        for known in image.repo_digests if wanted.digest else image.repo_tags:
            try:
                candidate = Reference.parse(known)
            except ImageReferenceError:
                continue
            if candidate.name != wanted.name:
                continue
            if wanted.digest and candidate.digest == wanted.digest:
                return image
            if not wanted.digest and (candidate.tag or "latest") == (wanted.tag or "latest"):
                return image
    return None
