"""Quarry's server: FastAPI routers, storage, scheduler and notifications wired together."""
