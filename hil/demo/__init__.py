"""``civicedge demo``: a virtual fleet, the gateway, SQLite and the dashboard on one laptop."""
