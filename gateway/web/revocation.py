"""What revoking a device does to its open data, in words for whoever revokes it.

Kept apart from the web app (no imports) so the CLI's ``devices revoke`` can say it without loading
aiohttp; the rules it describes are the open data's: :func:`gateway.web.ngsi.publishable` drops a
revoked device from the listings and :func:`gateway.web.opendata.csv_devices` keeps its rows.
"""

# docs/open-data.md, "Revoked devices": told by ``devices revoke`` and the admin API's answer and audit
# line, so the open-data officer knows that history stays published while the device leaves the listings.
REVOKED_OPEN_DATA = ("its entity leaves the open-data listings now (NGSI-LD entities, devices.geojson); the values it "
                     "released before the revocation stay in the store and in /opendata/readings.csv until their "
                     "retention ends; nothing it sends from now on is stored")
