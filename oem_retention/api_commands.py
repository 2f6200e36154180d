"""`oem-retention api`: serve the API, print its OpenAPI document, manage its users."""

from __future__ import annotations

import asyncio
import getpass
import sys
from typing import Annotated

import orjson
import psycopg
import typer
import uvicorn

from api.app import create_app
from api.security import ROLES, hash_password
from core.settings import Settings
from core.sql import queries

api_app = typer.Typer(help="The HTTP API: serve it, print its OpenAPI document, add users.",
                      no_args_is_help=True)


def app_from_environment() -> object:
    """The ASGI app of a worker process, its settings read from the environment.

    uvicorn calls it in each of ``api_workers`` processes: each builds its own, with its pools.
    """
    return create_app(Settings())


@api_app.command("serve")
def serve(host: Annotated[str | None, typer.Option(help="default: OEMR_API_HOST")] = None,
          port: Annotated[int | None, typer.Option(help="default: OEMR_API_PORT")] = None,
          workers: Annotated[int | None, typer.Option(help="default: OEMR_API_WORKERS")] = None,
          ) -> None:
    """Serve the API (uvicorn) until stopped."""
    settings = Settings()
    uvicorn.run("oem_retention.api_commands:app_from_environment", factory=True,
                host=host or settings.api_host, port=port or settings.api_port,
                workers=workers or settings.api_workers, proxy_headers=True,
                access_log=False, log_level="info")


@api_app.command("openapi")
def openapi() -> None:
    """Print the OpenAPI document (for client generators)."""
    document = create_app(Settings()).openapi()
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


@api_app.command("user")
def user(username: str,
         role: Annotated[str, typer.Option(help=f"one of {', '.join(ROLES)}")],
         customer_id: Annotated[int | None, typer.Option(
             help="the customer (database id) a portal user belongs to")] = None,
         tenant: Annotated[str | None, typer.Option(help="default: the only tenant")] = None,
         password_stdin: Annotated[bool, typer.Option(
             "--password-stdin", help="read the password from standard input")] = False,
         ) -> None:
    """Create a user of the API, or reset its password and role (prompts for the password)."""
    settings = Settings()
    if role not in ROLES:
        raise typer.BadParameter(f"one of {', '.join(ROLES)}", param_hint="--role")
    urls = settings.tenant_urls()
    name = tenant or (next(iter(urls)) if len(urls) == 1 else None)
    if name is None or name not in urls:
        raise typer.BadParameter(f"one of {', '.join(sorted(urls))}", param_hint="--tenant")
    password = (sys.stdin.readline().rstrip("\n") if password_stdin
                else getpass.getpass(f"password for {username}: "))
    if len(password) < 12:
        raise typer.BadParameter("12 characters or more", param_hint="password")
    asyncio.run(put_user(urls[name], username=username, password=password, role=role,
                         customer_id=customer_id))
    typer.echo(f"user {username} ({role}) ready in tenant {name}")


async def put_user(url: str, *, username: str, password: str, role: str,
                   customer_id: int | None = None) -> None:
    """Create a user, or reset its password and role, in the tenant database at ``url``."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute(queries("api", "sql/access.sql")["add_user"], {
            "username": username, "password_hash": hash_password(password), "role": role,
            "customer_id": customer_id})
