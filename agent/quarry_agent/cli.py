"""``quarry-agent run``: command line and QUARRY_AGENT_* environment settings."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from quarry_agent import __version__
from quarry_agent.runner import ALL_SOURCES, Agent, Config, default_sources
from quarry_agent.sources.linux_mounts import DEFAULT_REMOVABLE_GLOBS


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"QUARRY_AGENT_{name}", default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quarry-agent", description="Quarry endpoint sensor")
    p.add_argument("--version", action="version", version=f"quarry-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="collect events and send them to a Quarry server")
    run.add_argument("--server", default=_env("SERVER"), help="Quarry base URL (QUARRY_AGENT_SERVER)")
    run.add_argument("--key", default=_env("KEY"), help="API key with ingest scope (QUARRY_AGENT_KEY)")
    run.add_argument("--state-dir", default=_env("STATE_DIR"), help="queue, ids and counters (QUARRY_AGENT_STATE_DIR)")
    run.add_argument(
        "--removable-mounts", action="append", metavar="GLOB",
        help="mount points that count as removable media (repeatable; QUARRY_AGENT_REMOVABLE_MOUNTS, "
        f"colon-separated; default {' '.join(DEFAULT_REMOVABLE_GLOBS)})",
    )
    run.add_argument(
        "--sources", default=_env("SOURCES"),
        help=f"comma-separated subset of {','.join(ALL_SOURCES)} (QUARRY_AGENT_SOURCES; default "
        "per OS: " + ",".join(default_sources()) + ")",
    )
    # String defaults from the environment go through ``type`` too, so a bad QUARRY_AGENT_* value
    # gets argparse's clear "invalid float value" error, not a traceback.
    run.add_argument("--heartbeat-s", type=float, default=_env("HEARTBEAT_S", "300"))
    run.add_argument("--action-poll-s", type=float, default=_env("ACTION_POLL_S", "10"))
    run.add_argument("--max-queue-mb", type=float, default=_env("MAX_QUEUE_MB", "256"))
    run.add_argument("--flush-interval-s", type=float, default=_env("FLUSH_INTERVAL_S", "0.5"))
    run.add_argument("--batch-events", type=int, default=_env("BATCH_EVENTS", "500"))
    run.add_argument("--max-backoff-s", type=float, default=_env("MAX_BACKOFF_S", "60"),
                     help="longest wait between delivery retries while the server is unreachable")
    run.add_argument("--device-id", default=_env("DEVICE_ID"), help="override the machine-id based DeviceId")
    run.add_argument("--ca-file", default=_env("CA_FILE"), help="CA bundle for an https server")
    run.add_argument("--eslogger", default=_env("ESLOGGER", "eslogger"), help="eslogger command (macOS)")
    run.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return p


def config_from(args: argparse.Namespace) -> Config:
    missing = [n for n in ("server", "key", "state_dir") if not getattr(args, n)]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise SystemExit(f"quarry-agent: missing {flags} (or QUARRY_AGENT_{missing[0].upper()})")
    globs = args.removable_mounts
    if not globs:
        env = _env("REMOVABLE_MOUNTS")
        globs = env.split(":") if env else list(DEFAULT_REMOVABLE_GLOBS)
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip()) if args.sources else default_sources()
    for name in ("heartbeat_s", "action_poll_s", "max_queue_mb", "flush_interval_s", "batch_events", "max_backoff_s"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"quarry-agent: --{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    parts = urlsplit(args.server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"quarry-agent: --server must be an http:// or https:// URL, got {args.server!r}")
    return Config(
        server=args.server, key=args.key, state_dir=Path(args.state_dir), removable_globs=tuple(globs),
        sources=sources, heartbeat_s=args.heartbeat_s, action_poll_s=args.action_poll_s,
        max_queue_bytes=int(args.max_queue_mb * 1024 * 1024), batch_events=args.batch_events,
        flush_interval_s=args.flush_interval_s, device_id=args.device_id, ca_file=args.ca_file,
        eslogger=args.eslogger, max_backoff_s=args.max_backoff_s,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = config_from(args)
    # The exec reader must get the GIL within a fraction of a short process's life (see
    # sources/linux_exec.py); Python's default lets another thread keep it for 5 ms.
    sys.setswitchinterval(0.0005)
    try:
        agent = Agent(cfg)
    except ValueError as e:
        raise SystemExit(f"quarry-agent: {e}") from None
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("quarry_agent").info("signal %d: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    while not stopping.wait(1.0):
        pass
    agent.shutdown()
    return 0
