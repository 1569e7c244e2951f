"""Test and benchmark tools that ship with the package."""
