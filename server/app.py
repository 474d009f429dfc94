"""The FastAPI application factory. Nothing is built at import time: ``create_app(settings)``
opens the metadata database and storage in the lifespan, so tests build apps with their own
settings and data directories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.errors import install_handlers
from server.metadata import MetadataDB
from server.responses import OrjsonResponse
from server.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app.state.settings = settings
        # On a full disk, give back the reserve first: SQLite cannot even open the metadata
        # database in WAL mode without room for its shared-memory file.
        from server.storage.space import SpaceGuard

        SpaceGuard(settings.data_dir, settings.min_free_bytes, settings.disk_reserve_bytes).prepare_start()
        app.state.metadata = MetadataDB(settings.data_dir / "metadata.sqlite")
        # Notifications: alerts handed over by detections are delivered by a background thread;
        # DeviceInfo (for device-group scoping) is read from storage once the lifespan opens it.
        from server.notify import Notifier

        app.state.notifier = Notifier(
            settings, app.state.metadata, storage=lambda: getattr(app.state, "storage", None)
        )
        app.state.notifier.start()
        # Storage start-up replays the WAL (file I/O, maybe seconds): off the event loop.
        from anyio import to_thread

        from kql import geoip
        from schema.catalog import default_catalog
        from server.storage import Storage

        # geo_info_from_ip_address() reads the operator's MaxMind database; a bad file stops
        # the start with the reason rather than failing every query that uses it.
        geoip.configure(settings.geoip_db)
        app.state.storage = Storage(settings, default_catalog())
        await to_thread.run_sync(app.state.storage.start)
        # Detections: the engine runs rules (run-now, backtests, the scheduler); the scheduler
        # is off when scheduler_enabled is false, so tests drive runs with their own times.
        from server.detections.runner import DetectionEngine
        from server.detections.scheduler import Scheduler

        app.state.detections = DetectionEngine(
            settings,
            app.state.metadata,
            app.state.storage,
            default_catalog(),
            notifier=lambda: getattr(app.state, "notifier", None),
        )
        app.state.detection_scheduler = None
        if settings.scheduler_enabled:
            app.state.detection_scheduler = Scheduler(app.state.detections, settings.scheduler_tick_s)
            app.state.detection_scheduler.start()
        try:
            yield
        finally:
            if app.state.detection_scheduler is not None:
                await app.state.detection_scheduler.stop()
            app.state.notifier.close()
            # Stop running queries first: storage cannot close its database under a busy
            # connection (the hunting routes' runner is made on first use, so may not exist).
            runner = getattr(app.state, "query_runner", None)
            if runner is not None:
                await to_thread.run_sync(runner.close)
            await to_thread.run_sync(app.state.storage.close)
            app.state.metadata.close()

    app = FastAPI(
        title="Quarry",
        version="0.1.0",
        description="Telemetry ingestion and KQL threat hunting over Defender Device* tables.",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        # Only /healthz is open (issue 2, section 5): FastAPI's open /openapi.json, /docs and
        # /redoc are off; the OpenAPI document is served below behind a query key, and
        # server/web/docs.py serves Swagger UI at /docs (query key or browser session).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_handlers(app)
    from server.api import devices as devices_api
    from server.api import groups as groups_api
    from server.api import keys as keys_api
    from server.api import notifications as notifications_api
    from server.web import alerts as web_alerts
    from server.web import console as web_console
    from server.web import sessions as web_sessions

    app.include_router(notifications_api.router)
    app.include_router(groups_api.router)
    app.include_router(devices_api.router)
    app.include_router(keys_api.router)
    app.include_router(web_alerts.router)
    app.include_router(web_console.router)
    # The console calls the JSON API with its session cookie and CSRF token (server.auth.require).
    app.state.session_scope = web_sessions.api_session
    from server.api import alerts as alerts_api
    from server.api import detections as detections_api
    from server.api import incidents as incidents_api

    app.include_router(detections_api.router)
    app.include_router(alerts_api.router)
    app.include_router(incidents_api.router)
    # Metrics exist from the start (not in the lifespan) so every router can count into them.
    from schema.catalog import default_catalog
    from server.metrics import Metrics

    app.state.metrics = Metrics(settings.data_dir, default_catalog())
    from server.api.ingest import router as ingest_router

    app.include_router(ingest_router)
    from server.api.hunting_aids import router as hunting_aids_router
    from server.api.kusto import router as kusto_router
    from server.api.query import router as query_router
    from server.api.schema import router as schema_router
    from server.metrics import metrics_router

    app.include_router(hunting_aids_router)  # before /api/query's own routes: more specific paths
    app.include_router(query_router)
    app.include_router(schema_router)
    app.include_router(kusto_router)
    app.include_router(metrics_router())

    from fastapi import Depends

    from server.auth import require

    @app.get("/api/openapi.json", include_in_schema=False, dependencies=[Depends(require("query"))])
    async def openapi_document() -> dict[str, object]:
        return app.openapi()

    from server.web import docs as web_docs

    app.include_router(web_docs.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, object]:
        # Liveness: 200 while the process serves (a restart would not cure a full disk); the
        # body says when and why it is degraded.
        storage = getattr(app.state, "storage", None)
        reasons = storage.health() if storage is not None else []
        if reasons:
            return {"ok": True, "status": "degraded", "reasons": reasons}
        return {"ok": True, "status": "ok"}

    return app
