"""Small server-rendered pages (the alert page linked from notification emails)."""
