"""``mllp-trio certs``: write development certificates."""

from __future__ import annotations

from pathlib import Path

import click

from mllp_trio._cli._common import DEFAULT_CERTS
from mllp_trio._devcerts import DevCertsExist, write_dev_certs


@click.command()
@click.argument(
    "directory",
    required=False,
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_CERTS,
)
@click.option("--force", is_flag=True, help="overwrite existing files")
def certs(directory: Path, force: bool) -> int:
    """Write development certificates to DIRECTORY (default certs/); never for production.

    A CA, a server certificate and key, and a client certificate and key:
    the listener and the sender find them there by default.
    """
    try:
        paths = write_dev_certs(directory, overwrite=force)
    except DevCertsExist as exc:
        raise click.ClickException(f"{exc} (use --force to replace them)") from None
    click.echo(f"wrote development certificates (not for production) to {paths.directory}/:")
    for path in (
        paths.ca,
        paths.server_cert,
        paths.server_key,
        paths.client_cert,
        paths.client_key,
    ):
        click.echo(f"  {path}")
    return 0
