"""Waste collection routes from smart-bin reports.

Pure core (no gateway needed): :func:`plan_collection` over a list of :class:`BinStatus`.
Adapters: :class:`GatewayBinSource` (report store + registry), the ``civicedge routes plan``
command (:mod:`gateway.routes.cli`) and ``GET /api/routes/plan`` (:func:`gateway.routes.web.routes_handlers`).
See docs/routes.md.

The names below are imported on first use (PEP 562 ``__getattr__``), not with the package: the
gateway imports :mod:`gateway.routes.web` at start, and importing every submodule here would load
the planner's modules with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.lazy_exports import lazy_attribute

if TYPE_CHECKING:
    from gateway.routes.distances import CsvMatrix, DistanceProvider, GreatCircle, OsrmTable, haversine_m
    from gateway.routes.errors import (
        BinDataError,
        CapacityError,
        InvalidInputError,
        MatrixError,
        MatrixUnreachableError,
        NoBinsDueError,
        RoutesError,
        SolverError,
    )
    from gateway.routes.model import BinStatus, Candidate, Depot, FillReading, Plan, Reason, Route, Stop
    from gateway.routes.outputs import plan_to_csv, plan_to_dict, plan_to_geojson, plan_to_json, render
    from gateway.routes.planner import PlanSettings, plan_collection
    from gateway.routes.source import BinSource, GatewayBinSource, StaticBinSource

#: Public name -> the submodule that defines it.
_HOMES: dict[str, str] = {
    **dict.fromkeys(("CsvMatrix", "DistanceProvider", "GreatCircle", "OsrmTable", "haversine_m"), "distances"),
    **dict.fromkeys(("BinDataError", "CapacityError", "InvalidInputError", "MatrixError", "MatrixUnreachableError",
                     "NoBinsDueError", "RoutesError", "SolverError"), "errors"),
    **dict.fromkeys(("BinStatus", "Candidate", "Depot", "FillReading", "Plan", "Reason", "Route", "Stop"), "model"),
    **dict.fromkeys(("plan_to_csv", "plan_to_dict", "plan_to_geojson", "plan_to_json", "render"), "outputs"),
    **dict.fromkeys(("PlanSettings", "plan_collection"), "planner"),
    **dict.fromkeys(("BinSource", "GatewayBinSource", "StaticBinSource"), "source"),
}

__all__ = [
    "BinDataError", "BinSource", "BinStatus", "Candidate", "CapacityError", "CsvMatrix", "Depot",
    "DistanceProvider", "FillReading", "GatewayBinSource", "GreatCircle", "InvalidInputError", "MatrixError",
    "MatrixUnreachableError", "NoBinsDueError", "OsrmTable", "Plan", "PlanSettings", "Reason", "Route",
    "RoutesError", "SolverError", "StaticBinSource", "Stop", "haversine_m", "plan_collection", "plan_to_csv",
    "plan_to_dict", "plan_to_geojson", "plan_to_json", "render",
]


def __getattr__(name: str) -> Any:
    """``gateway.routes.<name>``: imports the submodule defining it on first use."""
    return lazy_attribute(__name__, _HOMES, globals(), name)
