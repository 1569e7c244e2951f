"""The warehouse's SQL migrations (``warehouse/migrations/NNN_name.sql``), shipped as package data.

This package holds no code: it exists so that the SQL travels with the product in a wheel and is
found through ``importlib.resources`` (``sleeptime.storage.warehouse.migrations_dir``), in a
checkout, an editable install and a regular ``pip install .`` alike.
"""
