"""Device applications: one per device kind (``streetlight``, ``bin``).

Apps get everything injected: hardware objects (``civic.hal``), the board config, the kind's
policy, the core's reporter (``civic.report.Reporter``) and releaser
(``civic.privacy.release.Releaser``), and a clock. They never create hardware themselves.
"""
