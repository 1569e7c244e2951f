"""Command-line entry points of the query service, ready to mount in the main CLI::

    from sleeptime.service.cli import keys_app, serve
    app.command()(serve)                    # sleeptime serve
    app.add_typer(keys_app, name="keys")    # sleeptime keys create|revoke|list

and runnable on their own: ``python -m sleeptime.service serve|keys ...``.
Heavy imports (FastAPI, uvicorn, litellm) happen inside the commands.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

keys_app = typer.Typer(help="Create, revoke and list the query service's API keys.", no_args_is_help=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML configuration file (see sleeptime.yaml).")]
OutputOpt = Annotated[Optional[Path], typer.Option(help="Output folder of the runs (default: out/).")]
KeysOpt = Annotated[Optional[Path], typer.Option("--keys-file", help="API key file (default: <output_dir>/service/api_keys.json).")]


def _config(config: Path | None, output_dir: Path | None):
    from sleeptime.config import load_config

    try:
        return load_config(config, output_dir=output_dir)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _store(config: Path | None, output_dir: Path | None, keys_file: Path | None):
    from sleeptime.service.app import default_keys_path
    from sleeptime.service.keys import KeyStore

    return KeyStore(keys_file or default_keys_path(_config(config, output_dir)))


def serve(
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    warehouse: Annotated[Optional[Path], typer.Option(help="Published warehouse (default: <output_dir>/warehouse/sleeptime.duckdb).")] = None,
    keys_file: KeysOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you say otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without API keys: every caller sees every tenant. Logged as a warning.")] = False,
    reload_interval: Annotated[float, typer.Option(help="Seconds between checks for a newly published snapshot.")] = 2.0,
    log_batch_size: Annotated[int, typer.Option(help="Query-log rows per Parquet batch.")] = 50,
    log_flush_s: Annotated[float, typer.Option(help="Write pending query-log rows at least this often (seconds).")] = 5.0,
    query_log: Annotated[bool, typer.Option("--query-log/--no-query-log", help="Append every answered query to the lake.")] = True,
    response_cache: Annotated[bool, typer.Option("--response-cache/--no-response-cache", help="Answer repeated identical model requests from the disk cache (off by default).")] = False,
    query_log_dir: Annotated[Optional[Path], typer.Option(help="Spool folder for the query log, committed to the lake by the next publish (default: <output_dir>/spool).")] = None,
    max_question_chars: Annotated[int, typer.Option(help="Longest question accepted (413 beyond).")] = 4000,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 beyond).")] = 16384,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="uvicorn's per-request access log.")] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the query service (FastAPI under uvicorn): POST /v1/answer picks the cheapest adequate
    (variant, test budget) with the fitted policy and answers through the model gateway."""
    import uvicorn

    from sleeptime.service.app import ServiceSettings, create_app

    cfg = _config(config, output_dir)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = ServiceSettings(
        config=cfg, warehouse_path=warehouse, keys_path=keys_file, auth=not no_auth, reload_interval_s=reload_interval,
        log_batch_size=log_batch_size, log_flush_s=log_flush_s, query_log=query_log, query_log_dir=query_log_dir, response_cache=response_cache,
        max_question_chars=max_question_chars, max_body_bytes=max_body_bytes, host=host, port=port,
    )
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))  # not one line per call
    log = logging.getLogger("sleeptime.service")
    if settings.auth:
        from sleeptime.service.keys import KeyStore

        active = [k for k in KeyStore(settings.resolved_keys).list() if k.active]
        if not active:
            log.warning("no active API key in %s: every request will get 401; create one with `sleeptime keys create TENANT`",
                        settings.resolved_keys)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("authentication is OFF and the service listens on %s, beyond loopback", host)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level.lower(), access_log=access_log)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Argument(help="The tenant the key acts for (contexts whose metadata has this tenant).")],
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    keys_file: KeysOpt = None,
) -> None:
    """Create an API key for TENANT and print it once (only its salted sha256 is stored)."""
    store = _store(config, output_dir, keys_file)
    try:
        key_id, secret = store.create(tenant)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"key id: {key_id}  tenant: {tenant}  file: {store.path}")
    typer.echo("secret (shown once; send it as 'Authorization: Bearer <secret>'):")
    typer.echo(secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id printed by `keys create` or `keys list`.")],
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    keys_file: KeysOpt = None,
) -> None:
    """Revoke an API key; a running service refuses it from the next request on."""
    store = _store(config, output_dir, keys_file)
    try:
        info = store.revoke(key_id)
    except KeyError as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"revoked {info.key_id} (tenant {info.tenant}) at {info.revoked_at}")


@keys_app.command("list")
def keys_list(config: ConfigOpt = None, output_dir: OutputOpt = None, keys_file: KeysOpt = None) -> None:
    """List key ids, tenants and dates (never secrets or hashes)."""
    store = _store(config, output_dir, keys_file)
    keys = store.list()
    if not keys:
        typer.echo(f"no keys in {store.path}")
    for k in keys:
        typer.echo(f"{k.key_id}  {k.tenant:<20}  created {k.created_at}  " + (f"revoked {k.revoked_at}" if k.revoked_at else "active"))


service_app = typer.Typer(help="The sleeptime query service.", no_args_is_help=True, add_completion=False)
service_app.command()(serve)
service_app.add_typer(keys_app, name="keys")
