"""The gateway's web surface: HTTP API, open data, transparency page, dashboard, metrics.

Entry point: :func:`gateway.web.app.create_app` builds the aiohttp application; the gateway
service mounts it with an ``aiohttp.web.AppRunner`` on the ``[http]`` listen address.
"""
