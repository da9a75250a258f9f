"""``python -m vlaforge.cli ...``: the same as the ``vlaforge`` console script."""

from vlaforge.cli import main

main()
