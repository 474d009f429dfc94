"""The ``quarry`` command line: serve, demo, keys, repair, rules, and the offline check/sql/query tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.metadata import MetadataDB
    from server.settings import Settings


def _server_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with --data-dir, --host and --port on top when given."""
    from server.settings import Settings

    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = Path(args.data_dir)
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    return Settings(**overrides)  # type: ignore[arg-type]


def _disable_huge_pages() -> None:
    """Opt this process out of transparent huge pages (Linux ``PR_SET_THP_DISABLE``).

    Arrow's allocator (mimalloc) asks for huge pages; ingest allocates and frees tens of MiB per
    second of short-lived column buffers, and every 2 MiB page the allocator hands back and takes
    again is zeroed whole by the kernel. Measured on the ingest benchmark, that zeroing was a
    quarter of the server's CPU; with 4 KiB pages it all but disappears. This is what mimalloc's
    own ``MIMALLOC_ALLOW_THP=0`` does, but that is read only when pyarrow loads. Best effort:
    other systems, or a kernel that refuses, keep their default."""
    if not sys.platform.startswith("linux"):
        return
    import contextlib
    import ctypes

    pr_set_thp_disable = 41
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_thp_disable, 1, 0, 0, 0)


def _serve(args: argparse.Namespace) -> int:
    _disable_huge_pages()
    import uvicorn

    from server.app import create_app

    settings = _server_settings(args)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Load the synthetic dataset once (see server/demo/load.py), print a key, then serve."""
    from server.auth import create_key
    from server.demo.load import DemoError, banner, load_demo
    from server.metadata import MetadataDB

    settings = _server_settings(args)
    try:
        load = load_demo(settings, days=args.days, devices=args.devices, seed=args.seed,
                         log=lambda m: print(m, flush=True))
    except DemoError as e:
        print(f"quarry demo: {e}", file=sys.stderr)
        return 2
    db = MetadataDB(settings.data_dir / "metadata.sqlite")
    try:
        key = create_key(db, "admin", "quarry demo")
    finally:
        db.close()
    print(banner(settings, load, key, serving=not args.no_serve), flush=True)
    if args.no_serve:
        return 0
    return _serve(args)


def _metadata(args: argparse.Namespace) -> MetadataDB:
    from server.metadata import MetadataDB
    from server.settings import Settings

    data_dir = Path(args.data_dir) if args.data_dir else Settings().data_dir
    return MetadataDB(data_dir / "metadata.sqlite")


def _keys_create(args: argparse.Namespace) -> int:
    from server.auth import KeyError_, create_key

    db = _metadata(args)
    try:
        print(create_key(db, args.scope, args.name or "", args.device))
    except KeyError_ as e:
        print(f"quarry keys create: {e}", file=sys.stderr)
        return 2
    finally:
        db.close()
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    import json

    from server.auth import list_keys

    db = _metadata(args)
    try:
        keys = list_keys(db, include_revoked=args.all)
    finally:
        db.close()
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    cols = ("prefix", "scope", "name", "devices", "createdAt", "lastUsedAt", "revokedAt")
    rows = [[(",".join(k["devices"]) if k["devices"] else "any") if c == "devices"
             else str(k[c] or "-") for c in cols] for k in keys]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    for line in [list(cols), *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from server.auth import KeyError_, revoke_by_prefix

    db = _metadata(args)
    try:
        k = revoke_by_prefix(db, args.prefix)
    except KeyError_ as e:
        print(f"quarry keys revoke: {e}", file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"revoked {k['prefix']} ({k['scope']}{', ' + k['name'] if k['name'] else ''})")
    return 0


def _repair(args: argparse.Namespace) -> int:
    """Check every Parquet file and repair those that cannot be read back (server stopped)."""
    import logging

    from schema import default_catalog
    from server.settings import Settings
    from server.storage.repair import repair_data_dir

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    data_dir = Path(args.data_dir) if args.data_dir else Settings().data_dir
    try:
        checked, repairs = repair_data_dir(data_dir.resolve(), list(default_catalog().tables))
    except (RuntimeError, FileNotFoundError) as e:
        print(f"quarry repair: {e}", file=sys.stderr)
        return 2
    for r in repairs:
        lost = f"; lost: {'; '.join(r.lost_row_groups)}" if r.lost_row_groups else ""
        print(f"repaired {r.source}: {r.rows} rows kept in {r.replacement}, "
              f"{r.fixed_values} values with invalid UTF-8 replaced by U+FFFD, original in "
              f"{r.quarantined}{lost}")
    print(f"checked {checked} Parquet files, repaired {len(repairs)}")
    return 1 if any(r.lost_row_groups for r in repairs) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quarry", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP server")
    s.add_argument("--data-dir")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=_serve)

    d = sub.add_parser("demo", help="load a synthetic 7-day dataset (once) and serve it")
    d.add_argument("--data-dir")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.add_argument("--days", type=int, default=7, help="days of events up to now (default 7)")
    d.add_argument("--devices", type=int, default=40, help="number of devices (default 40)")
    d.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same data)")
    d.add_argument("--no-serve", action="store_true", help="load and print the key, then exit")
    d.set_defaults(func=_demo)

    k = sub.add_parser("keys", help="manage API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key and print it (only its hash is stored)")
    kc.add_argument("--scope", required=True, choices=["ingest", "query", "admin"])
    kc.add_argument("--name")
    kc.add_argument("--device", action="append",
                    help="bind an ingest key to this device id (repeat for several)")
    kc.add_argument("--data-dir")
    kc.set_defaults(func=_keys_create)
    kl = ksub.add_parser("list", help="list keys: prefix, scope, name, devices, times")
    kl.add_argument("--all", action="store_true", help="include revoked keys")
    kl.add_argument("--json", action="store_true", help="JSON, as GET /api/keys answers")
    kl.add_argument("--data-dir")
    kl.set_defaults(func=_keys_list)
    kr = ksub.add_parser("revoke", help="revoke a key by its prefix (it stops working at once)")
    kr.add_argument("prefix", help="the key's prefix, as `quarry keys list` shows it")
    kr.add_argument("--data-dir")
    kr.set_defaults(func=_keys_revoke)

    rp = sub.add_parser("repair", help="repair Parquet files that cannot be read back (server stopped)")
    rp.add_argument("--data-dir")
    rp.set_defaults(func=_repair)

    from server.detections.cli import add_rules_parser

    add_rules_parser(sub)

    from server.query.cli import add_query_parser

    add_query_parser(sub)

    from kql.cli import add_kql_parsers

    add_kql_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
