"""Prefect flows of ptune (see README.md)."""
