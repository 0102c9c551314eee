"""Web surface tests (a package, so its conftest stays ``web.conftest``)."""
