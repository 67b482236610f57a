"""`twinkle-auto recipe`: list the recipes, show one's parameters, or render one to a train.py.

For people and scripts without the chat: render, read (or edit) the file, then
`twinkle-auto start RUN --script train.py`. Values after `--set` are read as JSON when they parse
(`lr=1e-4`, `rewards=["accuracy"]`, `dataset_subset=null`), as text otherwise (`model=Qwen/Qwen2.5-0.5B`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from twinkle_auto.recipes.base import RecipeError
from twinkle_auto.recipes.catalog import list_recipes, render_recipe


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `recipe` subcommand (cli.py registers it with one call)."""
    p = sub.add_parser(
        "recipe", parents=parents, help="list recipes, or render one to a train.py (start it with `start`)"
    )
    p.add_argument("name", nargs="?", help="recipe to render or describe (omit to list them)")
    p.add_argument(
        "--set", dest="params", action="append", default=[], metavar="K=V", help="a parameter (repeatable)"
    )
    p.add_argument("-o", "--output", default=None, help="write the script here (default: stdout)")
    p.add_argument("--show-params", action="store_true", help="the recipe's parameters, defaults and meaning")
    p.set_defaults(handler=run_recipe)
    return p


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`K=V` strings as parameters; V is JSON when it parses, text otherwise."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        params[key.strip()] = value
    return params


def _params_table(name: str) -> list[dict[str, Any]]:
    info = next((i for i in list_recipes() if i.name == name), None)
    if info is None:
        render_recipe(name, {})  # raises the one-line "unknown recipe" error with the names
        raise RecipeError(f"unknown recipe {name!r}")
    required = set(info.params_schema.get("required", []))
    return [
        {
            "name": key,
            "required": key in required,
            "default": prop.get("default"),
            "description": prop.get("description", ""),
        }
        for key, prop in info.params_schema.get("properties", {}).items()
    ]


def run_recipe(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    if not args.name:
        infos = list_recipes()
        if as_json:
            print(
                json.dumps(
                    [
                        {"name": i.name, "description": i.description, "needs_server": i.needs_server}
                        for i in infos
                    ]
                )
            )
        else:
            for info in infos:
                print(f"{info.name:14} {info.description}")
        return 0
    if args.show_params:
        table = _params_table(args.name)
        if as_json:
            print(json.dumps(table))
        else:
            for row in table:
                default = "required" if row["required"] else f"default {json.dumps(row['default'])}"
                print(f"{row['name']:16} {default:24} {row['description']}")
        return 0
    rendered = render_recipe(args.name, parse_assignments(args.params))
    if args.output:
        Path(args.output).write_text(rendered.script, encoding="utf-8")
    if as_json:
        print(
            json.dumps(
                {
                    "name": rendered.name,
                    "params": rendered.params,
                    "notes": rendered.notes,
                    "output": args.output,
                    "script": None if args.output else rendered.script,
                }
            )
        )
        return 0
    for note in rendered.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output:
        print(
            f"wrote {args.output} ({len(rendered.script.splitlines())} lines); start it with: "
            f"twinkle-auto start RUN --script {args.output}"
        )
    else:
        sys.stdout.write(rendered.script)
    return 0
