"""Errors of the scenario layer (all derive from :class:`hil.errors.HilError`)."""

from __future__ import annotations

from hil.errors import HilError


class ScenarioError(HilError):
    """A scenario file is invalid (``details``: ``path``, ``key``, ``value`` as far as known)."""


class UnknownKeyError(ScenarioError):
    """A table of the scenario file has a key the format does not define."""


class BadDurationError(ScenarioError):
    """A duration or time (``duration``, ``by``, ``within``) cannot be read."""


class UnknownBoardError(ScenarioError):
    """A ``[[boards]]`` entry names a board definition that does not exist."""


class UnknownExpectationError(ScenarioError):
    """The ``[expect]`` table names an expectation the runner does not know."""


class ScenarioErrors(ScenarioError):
    """Several independent mistakes of one scenario file, all found in one pass (so five typos take
    one round of ``hil validate``, not five).

    Attributes:
        errors: each mistake as its own error (of its specific class), in file order.

    ``details`` are the first error's, plus ``count``; ``str()`` lists them all, one per line.
    """

    def __init__(self, errors: list[ScenarioError]) -> None:
        lines = "\n".join(f"  {i}. {err}" for i, err in enumerate(errors, 1))
        super().__init__(f"{len(errors)} errors:\n{lines}", **{**errors[0].details, "count": len(errors)})
        self.errors = list(errors)


class ScenarioRunError(HilError):
    """The scenario could not be run (gateway did not start, work directory not ours, ...)."""
