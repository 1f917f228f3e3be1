"""``python -m papersift``: the same command line as ``papersift``."""

from papersift.cli import main

main()
