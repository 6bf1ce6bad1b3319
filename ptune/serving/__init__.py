"""Serving: one frozen base model answers every task (mixed-task batches, `ptune serve`)."""
