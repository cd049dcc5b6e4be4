"""Persistence layer (SQLAlchemy models, sessions, repositories)."""
