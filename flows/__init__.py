"""Prefect flows: compositions of tasks/ and nothing else."""
