"""``python -m sandlot.cli``: the ``sandlot`` command."""

from . import main

main()
