"""``--config FILE``: option defaults from a TOML file.

The file becomes click's default map, which click consults after the
command line and the environment and before the built-in defaults: so the
precedence is flag > environment (``MLLP_TRIO_...``) > file > default.

Layout: a table per command (``[listen]``, ``[send]``, ``[store.list]``),
keys named after the options (``idle-timeout`` or ``idle_timeout``). Keys at
the top level apply to every command that has such an option. An unknown
command or option is an error naming the file and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _option_names(command: click.Command) -> dict[str, str]:
    """Every key that names an option of ``command`` (its flags too), to its parameter name."""
    names: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name:
            names[param.name] = param.name
            for flag in (*param.opts, *param.secondary_opts):
                if flag.startswith("--"):
                    names[flag[2:].replace("-", "_")] = param.name
    return names


def _all_option_names(command: click.Command) -> set[str]:
    names = set(_option_names(command))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            names |= _all_option_names(sub)
    return names


def _defaults(
    command: click.Command, table: dict[str, Any], inherited: dict[str, Any], file: Path, where: str
) -> dict[str, Any]:
    options = _option_names(command)
    result: dict[str, Any] = {options[k]: v for k, v in inherited.items() if k in options}
    scalars = dict(inherited)
    subtables: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if isinstance(command, click.Group) and key in command.commands:
            if not isinstance(value, dict):
                raise click.BadParameter(
                    f"{file}: {where}{key} must be a table ([{where}{key}]) of its options",
                    param_hint="--config",
                )
            subtables[key] = value
        elif name in options:
            result[options[name]] = value
            scalars[name] = value
        else:
            place = f"[{where.rstrip('.')}]" if where else "the top level"
            raise click.BadParameter(
                f"{file}: {place} has an unknown key {key!r} (not an option of "
                f"'{command.name}'; see 'mllp-trio {where.replace('.', ' ')}--help')",
                param_hint="--config",
            )
    if isinstance(command, click.Group):
        for key, sub in command.commands.items():
            result[key] = _defaults(sub, subtables.get(key, {}), scalars, file, f"{where}{key}.")
    return result


def _root_defaults(root: click.Group, data: dict[str, Any], file: Path) -> dict[str, Any]:
    known = _all_option_names(root)
    inherited: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    for key, value in data.items():
        if key in root.commands:
            tables[key] = value
        elif key.replace("-", "_") in known and not isinstance(value, dict):
            inherited[key.replace("-", "_")] = value
        else:
            raise click.BadParameter(
                f"{file}: unknown key {key!r} at the top level (a command table such as "
                "[listen], or an option of some command)",
                param_hint="--config",
            )
    result: dict[str, Any] = {}
    for key, sub in root.commands.items():
        table = tables.get(key, {})
        if not isinstance(table, dict):
            raise click.BadParameter(
                f"{file}: {key} must be a table ([{key}]) of its options", param_hint="--config"
            )
        result[key] = _defaults(sub, table, inherited, file, f"{key}.")
    return result


def load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback of ``--config``: read the TOML file into the default map."""
    if value is None or ctx.resilient_parsing:
        return value
    try:
        data = tomllib.loads(value.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {value}: {exc.strerror or exc}", ctx, param
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{value} is not valid TOML: {exc}", ctx, param) from None
    assert isinstance(ctx.command, click.Group)
    ctx.default_map = _root_defaults(ctx.command, data, value)
    return value


def config_option(command: F) -> F:
    """``--config FILE`` on the root group."""
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=load_config,
        help=(
            "TOML file of option defaults: [listen], [send], [store.list] tables "
            "(keys named after the options; top-level keys apply to every command)"
        ),
    )(command)
