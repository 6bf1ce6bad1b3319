"""Prefect tasks of ptune (see README.md)."""
