"""`crypto-assets serve`: the read API on uvicorn, bound to 127.0.0.1 unless told otherwise
(it has no authentication: expose it beyond the machine only behind something that adds it)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="data root (default $CRYPTO_HOME or ./var); the API reads <home>/lake")
    p.add_argument("--host", default=os.environ.get("API_HOST", DEFAULT_HOST),
                   help=f"address to bind (default $API_HOST or {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", DEFAULT_PORT)),
                   help=f"port (default $API_PORT or {DEFAULT_PORT})")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--stale-after-s", type=float, default=float(os.environ.get("API_STALE_AFTER_S", 900)),
                   help="/health: a coin whose newest feature row is older than this is stale (default 900)")
    p.add_argument("--log-level", default="info")


def cmd_serve(args) -> int:
    import uvicorn

    from crypto_assets import settings
    from crypto_assets.api.app import create_app

    if getattr(args, "home", None):
        os.environ["CRYPTO_HOME"] = str(Path(args.home).resolve())
    lake = settings.lakehouse_resource().lake_path
    print(f"read API over {lake} on http://{args.host}:{args.port} (docs: /docs)", flush=True)
    if args.workers > 1:  # each worker process builds its own app from the environment
        os.environ["API_STALE_AFTER_S"] = str(args.stale_after_s)
        uvicorn.run("crypto_assets.api.server:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level)
    else:
        uvicorn.run(create_app(lake, stale_after_s=args.stale_after_s), host=args.host, port=args.port,
                    log_level=args.log_level)
    return 0


def app_from_env():
    """The app from $CRYPTO_HOME, $COINS and $API_STALE_AFTER_S (uvicorn's factory for workers)."""
    from crypto_assets.api.app import create_app

    return create_app(stale_after_s=float(os.environ.get("API_STALE_AFTER_S", 900)))
