"""Prefect tasks: thin wrappers over the core package (sleeptime/), one concern per module."""
