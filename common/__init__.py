"""What every other package builds on and that builds on nothing of the project: the one
exception tree and its wire codes (``common.error``).

Packages are layered ``common <- scheduler <- mesh <- shuffle <- storage <- disco``: a package
imports only packages to its left (``tests/unit/test_layering.py`` checks this).
"""
