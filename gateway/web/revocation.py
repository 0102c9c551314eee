"""What revoking, retiring or reinstating a device does to its open data, in words for whoever does it.

Kept apart from the web app (no imports) so the CLI's ``devices revoke|retire|reinstate`` can say it
without loading aiohttp; the rules it describes are the open data's: :func:`gateway.web.ngsi.publishable`
drops a revoked or retired device from the listings and :func:`gateway.web.opendata.csv_devices` keeps
its rows.
"""

# docs/open-data.md, "Revoked devices": told by ``devices revoke`` and the admin API's answer and audit
# line, so the open-data officer knows that history stays published while the device leaves the listings.
REVOKED_OPEN_DATA = ("its entity leaves the open-data listings now (NGSI-LD entities, devices.geojson); the values it "
                     "released before the revocation stay in the store and in /opendata/readings.csv until their "
                     "retention ends; nothing it sends from now on is stored")

# docs/open-data.md, "Retired devices": a retired board left this gateway (moved to another gateway, whose
# entity speaks for it now, or taken off the street), so its entity must not go on claiming a current state.
RETIRED_OPEN_DATA = ("its entity leaves the open-data listings now (NGSI-LD entities, devices.geojson); the values it "
                     "released before it was retired stay in the store and in /opendata/readings.csv until their "
                     "retention ends; nothing it sends from now on is stored; reinstating it brings its entity "
                     "back")
REINSTATED_OPEN_DATA = ("its entity is back in the open-data listings (NGSI-LD entities, devices.geojson) with the "
                        "values it released before it was retired, and what it sends from now on is stored and "
                        "published again")
