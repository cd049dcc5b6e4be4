"""Test support code shared across the test folders: builders, factories, harnesses and fake servers.

Nothing here is collected as a test; conftest.py files hold the fixtures and import what they need from here.
"""
