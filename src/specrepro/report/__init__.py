"""Reporting: aggregate the tidy table, write tables and figures, execute notebooks.

Submodules are imported directly (``from specrepro.report.aggregate import summarise``) so
that importing the package does not pull in matplotlib or the Jupyter stack.
"""
