"""Custom detections: rules (KQL plus metadata), their runs, alerts, incidents, the process tree
and backtests. The API routers live in ``server/api/{detections,alerts,incidents}.py``."""
