"""Rollout order start-first: a new container proves itself beside the old one.

Pure: no I/O. Today's recreate (stop-first) sets the old container aside and
stops it before its successor runs. With ``rollout: {order: start-first}`` the
executor runs the successor as ``<name>.next``, a *candidate*, while the old
container keeps serving under its name, untouched (zero downtime behind a
proxy that finds containers by their labels). ``judge`` says what becomes of a
candidate, from the containers alone, so a restarted daemon decides the same:

- it is not what the definition wants now (another version, one that already
  failed here, or one the container under the name already runs): it is
  removed, and the service is planned as usual;
- it failed (exited, restarted, turned unhealthy, or was still starting when
  its ``health_timeout`` ran out): it is removed and the old container, which
  was never stopped, stays (RESTORE; the failure is remembered, so that
  version is not tried again until the definition or the image changes);
- it is still proving itself: nothing changes;
- it proved itself (or a swap was interrupted half-way): it takes the name
  and the old container stops and goes (PROMOTE).

This module knows containers, not steps: it returns ``Move``s, which the
planner turns into its steps (so the planner imports this module, never the
other way round).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import constants
from .container import Container
from .definitions import Service


@dataclass(frozen=True)
class Move:
    """One step for the planner: ``action`` names a member of its ``Action``."""

    action: str
    reason: str
    container: Container
    failed: Container | None = None  # RESTORE: the candidate that did not prove itself
    replaces: Container | None = None  # PROMOTE: the old container that goes


def starts_first(service: Service) -> bool:
    """Whether a recreate of ``service`` starts the new container before stopping the old."""
    return service.rollout is not None and service.rollout.order == "start-first"


def candidate_name(name: str) -> str:
    """The temporary name of the new container while it proves itself."""
    return name + constants.NEXT_SUFFIX


def judge(candidate: Container, current: Container | None, previous: Container | None,
          wanted: str, failed_before: str | None, verdict: str | None,
          timeout: float) -> tuple[list[Move], bool]:
    """What becomes of ``candidate`` (``<name>.next``), beside the container under
    the name (``current``) and a predecessor set aside (``previous``).

    ``wanted`` is the hash the definition wants; ``failed_before`` the error of a
    failure that blocks that hash; ``verdict`` the candidate's probation: why it
    failed, "" once it passed, None while undecided. Returns the moves and
    whether they are the service's whole plan for this pass (False: the
    candidate goes, and the service is planned as if it had never been there).
    """
    stale = _stale(candidate, current, wanted, failed_before)
    if stale:
        return [Move("REMOVE", stale, candidate)], False
    old = current or previous
    if verdict:
        if old is None:
            return [Move("REMOVE", f"the new container {verdict}; removing it "
                                   "(no old container is left to keep)", candidate)], False
        kept = "keeps serving" if old is current else "is put back"
        return [Move("RESTORE", f"the new container {verdict}; removing it, the old one {kept}",
                     old, failed=candidate)], True
    if verdict is None and (current is not None or previous is None):
        beside = "beside the old one" if current is not None else "(the old one is gone)"
        return [Move("KEEP", f"new container {candidate.name} proving itself {beside} "
                             f"for {timeout:g} s", candidate)], True
    moves = []
    if current is not None and previous is not None:
        moves.append(Move("REMOVE", f"container {previous.name} ({previous.short_id}) is left "
                                    "over from an earlier update", previous))
    why = ("the new container proved itself; it takes the name and the old one goes"
           if verdict == "" else "finishing a start-first swap that was interrupted")
    moves.append(Move("PROMOTE", why, candidate, replaces=old))
    return moves, True


def _stale(candidate: Container, current: Container | None, wanted: str,
           failed_before: str | None) -> str:
    """Why ``candidate`` is of no use any more ("" when it still is)."""
    which = f"container {candidate.name} ({candidate.short_id})"
    if candidate.config_hash != wanted:
        return f"{which} is of another version than the definition wants now"
    if failed_before is not None:
        return f"{which} runs a version that failed on this node ({failed_before})"
    if current is not None and current.config_hash == wanted:
        return f"{which} is not needed: the container under the name runs this version"
    return ""
