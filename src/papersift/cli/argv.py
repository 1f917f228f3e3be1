"""Global options wherever they are typed: ``papersift ingest FILE --db URL`` works.

Click reads an option only at the level that declares it, so ``--db`` after the subcommand
was "No such option". Users type global options last as often as first (as with git's
``-C`` they expect either), so they are moved in front of the subcommand before parsing.
"""

from __future__ import annotations

GLOBAL_WITH_VALUE = ("--db", "--home", "--config")


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with every global option (and its value) moved to the front.

    Nothing after a ``--`` separator is touched, and a global option's value is never
    mistaken for another option."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_WITH_VALUE:
            if "=" in arg:
                front.append(arg)
            elif i + 1 < len(args):
                front.extend(args[i : i + 2])
                i += 1
            else:
                rest.append(arg)  # let the parser report the missing value
        else:
            rest.append(arg)
        i += 1
    return front + rest
