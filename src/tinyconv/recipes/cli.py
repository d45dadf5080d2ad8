"""`tinyconv recipes [list | show NAME | copy NAME DEST]`: the packaged config recipes."""

from __future__ import annotations

import argparse


def _list(args: argparse.Namespace) -> int:
    from tinyconv.recipes import list_recipes, recipe_path

    for name in list_recipes():
        first = recipe_path(name).read_text().splitlines()[:1]
        about = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"{name:16s} {about}".rstrip())
    print("use one with --config NAME; copy it to edit: tinyconv recipes copy NAME FILE.yaml")
    return 0


def _show(args: argparse.Namespace) -> int:
    from tinyconv.recipes import recipe_path

    print(recipe_path(args.name).read_text(), end="")
    return 0


def _copy(args: argparse.Namespace) -> int:
    from tinyconv.recipes import copy_recipe

    out = copy_recipe(args.name, args.dest, overwrite=args.force)
    print(f"wrote {out}; use it with --config {out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list, print or copy the packaged config recipes (--config NAME uses one)")
    p.set_defaults(func=_list)
    rsub = p.add_subparsers(dest="recipes_command", metavar="ACTION")
    q = rsub.add_parser("list", help="the packaged recipes (the default action)")
    q.set_defaults(func=_list)
    q = rsub.add_parser("show", help="print a recipe's YAML")
    q.add_argument("name")
    q.set_defaults(func=_show)
    q = rsub.add_parser("copy", help="copy a recipe to a YAML file (or into a folder) to edit it")
    q.add_argument("name")
    q.add_argument("dest", help="a .yaml file, or an existing folder")
    q.add_argument("--force", action="store_true", help="replace DEST if it exists")
    q.set_defaults(func=_copy)
