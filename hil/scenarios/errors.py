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


class ScenarioRunError(HilError):
    """The scenario could not be run (gateway did not start, work directory not ours, ...)."""
