"""``python -m mllp_trio``: the same as the ``mllp-trio`` command."""

from ._cli import main

main()
