"""Celery worker: thin tasks that call services and write results through db."""
