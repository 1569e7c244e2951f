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
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from sleeptime.service.settings import ServiceSettings

keys_app = typer.Typer(help="Create, revoke and list the query service's API keys.", no_args_is_help=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML configuration file (see sleeptime.yaml).")]
OutputOpt = Annotated[Optional[Path], typer.Option(help="Output folder of the runs (default: out/).")]
# The same variable as the service setting keys_path, so `keys create` writes where `serve` reads.
KeysOpt = Annotated[Optional[Path], typer.Option(
    "--keys-file", envvar="SLEEPTIME_SERVICE_KEYS_PATH", help="API key file (default: <output_dir>/service/api_keys.json).")]


def _config(config: Path | None, output_dir: Path | None):
    from sleeptime.config import load_config

    try:
        return load_config(config, output_dir=output_dir)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _store(config: Path | None, output_dir: Path | None, keys_file: Path | None):
    from sleeptime.service.settings import default_keys_path
    from sleeptime.service.keys import KeyStore

    return KeyStore(keys_file or default_keys_path(_config(config, output_dir)))


def serve(
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    keys_file: KeysOpt = None,
    env_file: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False,
        help="Service settings, one SLEEPTIME_SERVICE_<NAME>=value per line (the environment wins over it).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1: loopback only).")] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port (default 8000).")] = None,
    log_level: Annotated[Optional[str], typer.Option(help="debug, info (default), warning or error.")] = None,
) -> None:
    """Run the query service (FastAPI under uvicorn): POST /v1/answer picks the cheapest adequate
    (variant, test budget) with the fitted policy and answers through the model gateway.

    Every other setting comes from the environment or --env-file: SLEEPTIME_SERVICE_<NAME>
    (the README's query service section lists them)."""
    import uvicorn
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from sleeptime.service.server import uvicorn_config
    from sleeptime.service.settings import ServiceSettings

    given = {"host": host, "port": port, "log_level": log_level, "keys_path": keys_file}
    if config is not None or output_dir is not None:
        given["config"] = _config(config, output_dir)
    try:
        settings = ServiceSettings(_env_file=env_file, **{k: v for k, v in given.items() if v is not None})
    except (ValidationError, SettingsError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _configure_logging(settings.log_level)
    _warn_about_access(settings)
    server = uvicorn.Server(uvicorn_config(settings))
    server.run()
    if not server.started:
        raise typer.Exit(3)  # what uvicorn.run exits with when the server could not start (a port in use)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))  # not one line per call


def _warn_about_access(settings: ServiceSettings) -> None:
    """Say at start when nobody can get in, or when everybody can from beyond this machine."""
    log = logging.getLogger("sleeptime.service")
    if settings.auth:
        from sleeptime.service.keys import KeyFileError, KeyStore

        try:
            active = [k for k in KeyStore(settings.resolved_keys).list() if k.active]
        except KeyFileError as exc:
            log.warning("%s: every request will get 503 until it can be read", exc)
            return
        if not active:
            log.warning("no active API key in %s: every request will get 401; create one with `sleeptime keys create TENANT`",
                        settings.resolved_keys)
    elif settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("authentication is OFF and the service listens on %s, beyond loopback", settings.host)


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
