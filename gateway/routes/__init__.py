"""Waste collection routes from smart-bin reports.

Pure core (no gateway needed): :func:`plan_collection` over a list of :class:`BinStatus`.
Adapters: :class:`GatewayBinSource` (report store + registry), the ``civicedge routes plan``
command (:mod:`gateway.routes.cli`) and ``GET /api/routes/plan`` (:func:`gateway.routes.web.routes_handlers`).
See docs/routes.md.
"""

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

__all__ = [
    "BinDataError", "BinSource", "BinStatus", "Candidate", "CapacityError", "CsvMatrix", "Depot",
    "DistanceProvider", "FillReading", "GatewayBinSource", "GreatCircle", "InvalidInputError", "MatrixError",
    "MatrixUnreachableError", "NoBinsDueError", "OsrmTable", "Plan", "PlanSettings", "Reason", "Route",
    "RoutesError", "SolverError", "StaticBinSource", "Stop", "haversine_m", "plan_collection", "plan_to_csv",
    "plan_to_dict", "plan_to_geojson", "plan_to_json", "render",
]
