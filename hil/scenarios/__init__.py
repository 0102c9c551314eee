"""Integrator scenarios: boards, stimuli timelines, faults and expectations on what the gateway stores.

``load_scenario(path)`` reads and validates a scenario file, ``run_scenario(scenario, ...)`` runs it
on virtual boards with a real gateway and returns a :class:`ScenarioResult`; ``write_junit`` and
``write_html`` render the result. See docs/scenarios.md.
"""

from hil.scenarios.errors import (BadDurationError, ScenarioError, ScenarioErrors, ScenarioRunError, UnknownBoardError,
                                  UnknownExpectationError, UnknownKeyError)
from hil.scenarios.model import BoardGroup, Expectations, FieldExpectation, Scenario
from hil.scenarios.loader import EXAMPLES_DIR, find_scenario, list_examples, load_scenario

__all__ = ["BadDurationError", "BoardGroup", "EXAMPLES_DIR", "Expectations", "FieldExpectation", "Scenario",
           "ScenarioError", "ScenarioErrors", "ScenarioRunError", "UnknownBoardError", "UnknownExpectationError", "UnknownKeyError",
           "find_scenario", "list_examples", "load_scenario"]
