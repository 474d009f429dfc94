"""Notifications: rules (who hears about which alerts), email and webhook delivery through a
durable outbox, and per-recipient throttling that folds an alert storm into one digest."""

from server.notify.notifier import Notifier

__all__ = ["Notifier"]
