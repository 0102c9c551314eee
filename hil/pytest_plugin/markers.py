"""The plugin's markers: their shapes, which board(s) a test gets, and markers its fixtures would ignore.

``requires(...)`` and the board fixtures must agree on the test's boards: ``board(name)`` is read by
``hil_board``/``hil_board_definition`` only, ``fleet(...)`` by ``hil_fleet`` only. A marker the test's
fixtures would ignore is a usage error (:func:`ignored_marker_problem`), never a silent switch to the
session board while ``requires(...)`` judged the marker's.
"""

from __future__ import annotations

import difflib
from typing import Iterable

import pytest

BOARD_MARKER_FIXTURES = frozenset({"hil_board", "hil_board_definition"})
"""Fixtures that read the ``board(name)`` marker."""

FLEET_MARKER_FIXTURES = frozenset({"hil_fleet"})
"""Fixtures that read the ``fleet(...)`` marker."""

GATEWAY_MARKER = "hil_gateway"
"""The marker that chooses ``hil_gateway``'s link, named after its fixture: this plugin loads in every pytest session
where civicedge is installed, and a bare ``gateway`` marker is a name a project's own tests (a city gateway's) use."""

GATEWAY_LINKS: tuple[str, ...] = ("uart", "ble")
"""What ``hil_gateway(link=...)`` takes: the link ``hil_gateway`` reads every board of the test over. The names are
the board capabilities of those links, which the marker therefore requires (as ``requires(...)`` does)."""


def gateway_link(item: pytest.Item) -> str | None:
    """The ``link`` of the item's closest ``hil_gateway(...)`` marker (None: no marker, each board over its UART
    when it has one, else over BLE).

    Raises:
        pytest.UsageError: positional arguments, other keywords, or a link not in :data:`GATEWAY_LINKS`.
    """
    mark = item.get_closest_marker(GATEWAY_MARKER)
    if mark is None:
        return None
    link = mark.kwargs.get("link")
    if mark.args or set(mark.kwargs) != {"link"} or link not in GATEWAY_LINKS:
        given = ", ".join([repr(a) for a in mark.args] + [f"{k}={v!r}" for k, v in mark.kwargs.items()])
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.hil_gateway({given}): hil_gateway(...) takes link= only, "
                                f"one of {', '.join(repr(name) for name in GATEWAY_LINKS)} (the link hil_gateway "
                                "reads the test's boards over), e.g. @pytest.mark.hil_gateway(link='ble')")
    return str(link)


def fleet_marker_text(mix: dict[str, int]) -> str:
    """``fleet(streetlight-esp32=3)``: a fleet marker as messages show it."""
    return "fleet(" + ", ".join(f"{name}={n}" for name, n in mix.items()) + ")"


def check_marker_shapes(item: pytest.Item) -> None:
    """Refuse a malformed ``board(...)`` or ``fleet(...)`` marker at collection, as ``sim(...)`` is.

    Raises:
        pytest.UsageError: ``board()`` or ``board(a, b)``, keywords or a non-string in ``board``;
            ``fleet()``, positional arguments or a count that is not an integer >= 1 in ``fleet``.
    """
    mark = item.get_closest_marker("board")
    if mark is not None and (len(mark.args) != 1 or not isinstance(mark.args[0], str) or mark.kwargs):
        given = ", ".join([repr(a) for a in mark.args] + [f"{k}={v!r}" for k, v in mark.kwargs.items()])
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.board({given}): board(...) takes one board name or "
                                "path to a board .toml file, e.g. @pytest.mark.board('streetlight-esp32') (several "
                                "boards: @pytest.mark.fleet(**{name: count}) with hil_fleet)")
    fleet = item.get_closest_marker("fleet")
    if fleet is not None:
        counts = list(fleet.kwargs.values())
        if fleet.args or not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            raise pytest.UsageError(f"{item.nodeid}: fleet(...) needs board_name=count with count >= 1, e.g. "
                                    "@pytest.mark.fleet(**{'streetlight-esp32': 2})")


def ignored_marker_problem(node: pytest.Item, fixturenames: Iterable[str]) -> str | None:
    """Why a ``board(...)``/``fleet(...)``/``hil_gateway(...)`` marker of ``node`` would be ignored by the fixtures
    the test uses (``fixturenames``), or None.

    ``board(...)`` with ``hil_fleet`` but no ``hil_board``, or ``fleet(...)`` with ``hil_board`` but no
    ``hil_fleet``: the fixture would bring up the session board while ``requires(...)`` checked the
    marker's. The ``hil_gateway(...)`` marker without the ``hil_gateway`` fixture would require a link nothing reads. A
    ``board``/``fleet`` marker on a test that uses no board fixture only chooses what ``requires(...)`` checks.
    """
    names = set(fixturenames)
    uses_board, uses_fleet = bool(BOARD_MARKER_FIXTURES & names), bool(FLEET_MARKER_FIXTURES & names)
    board = node.get_closest_marker("board")
    fleet = node.get_closest_marker("fleet")
    gateway = node.get_closest_marker(GATEWAY_MARKER)
    if gateway is not None and "hil_gateway" not in names:
        link = gateway.kwargs.get("link", "...")
        return (f"{node.nodeid}: @pytest.mark.hil_gateway(link={link!r}) is read by hil_gateway only, and this test does "
                "not use it (a test that gets hil_gateway through request.getfixturevalue names hil_gateway in its "
                "arguments instead)")
    if board is not None and uses_fleet and not uses_board:
        name = board.args[0] if board.args else "NAME"
        return (f"{node.nodeid}: @pytest.mark.board({name!r}) is read by hil_board only, and this test's hil_fleet "
                f"would ignore it (its boards: fleet(...), default 3 of the session board); use "
                f"@pytest.mark.fleet(**{{{name!r}: 3}})")
    if fleet is not None and uses_board and not uses_fleet:
        return (f"{node.nodeid}: @pytest.mark.{fleet_marker_text(dict(fleet.kwargs))} is read by hil_fleet only, and "
                "this test's hil_board would ignore it (its board: board(...), else the session board); use "
                "@pytest.mark.board(NAME) for hil_board (a test that gets hil_fleet through "
                "request.getfixturevalue names hil_fleet in its arguments instead)")
    return None


def board_refs(item: pytest.Item) -> list[tuple[str, str] | None]:
    """The boards ``item`` runs on, as ``(marker as messages show it, board name or path)``, None for the
    session board (``--hil-board``, else the default), the same ones its fixtures bring up.

    ``hil_board``/``hil_board_definition``: the ``board(name)`` marker, else the session board;
    ``hil_fleet``: each board of the ``fleet(...)`` marker, else the session board. A test using
    neither (``requires(...)`` alone, ``hil_gateway`` alone) gets what its markers name, else the
    session board. Marker shapes are checked first (:func:`check_marker_shapes`).
    """
    names = set(getattr(item, "fixturenames", ()))
    uses_board, uses_fleet = bool(BOARD_MARKER_FIXTURES & names), bool(FLEET_MARKER_FIXTURES & names)
    board = item.get_closest_marker("board")
    fleet = item.get_closest_marker("fleet")
    board_ref: list[tuple[str, str] | None] = (
        [(f"board({board.args[0]!r})", board.args[0])] if board is not None and board.args else [])
    fleet_refs: list[tuple[str, str] | None] = (
        [(fleet_marker_text(dict(fleet.kwargs)), name) for name in fleet.kwargs] if fleet is not None else [])
    if not (uses_board or uses_fleet):
        return (board_ref + fleet_refs) or [None]
    refs: list[tuple[str, str] | None] = []
    if uses_board:
        refs += board_ref or [None]
    if uses_fleet:
        refs += fleet_refs or [None]
    return refs


def unknown_capability_message(name: object, known: Iterable[str]) -> str:
    """One line for a ``requires(...)`` capability nobody defines, with the closest known name:
    ``@pytest.mark.requires('ADC'): unknown capability 'ADC' (did you mean 'adc'? known: adc, ble, …)``."""
    known = sorted(known)
    text = str(name)
    by_case = [k for k in known if k.lower() == text.lower()]
    close = by_case or difflib.get_close_matches(text.lower(), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"@pytest.mark.requires({name!r}): unknown capability {name!r} ({hint}known: {', '.join(known)})"


__all__ = ["BOARD_MARKER_FIXTURES", "FLEET_MARKER_FIXTURES", "GATEWAY_LINKS", "GATEWAY_MARKER", "board_refs", "check_marker_shapes",
           "fleet_marker_text", "gateway_link", "ignored_marker_problem", "unknown_capability_message"]
