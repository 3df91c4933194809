"""Tools around the server: the load generator and bench, the eval harness and its report,
the tail check, the training-data export, and the ``alignserve`` command (``tools.cli``).

They drive the server or its runtime; the server never imports them.
"""
