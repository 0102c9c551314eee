"""The ``civicedge`` command line."""
