"""Persistence: SQLAlchemy Core tables and keyword-only repository functions.

This package is the only place with SQL. Repositories take an open ``Connection`` so the
caller decides the transaction boundary (a checkpoint is one transaction).
"""
