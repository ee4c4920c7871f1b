"""Notifications: readable messages about checks and runs, the webhook client, run records."""
