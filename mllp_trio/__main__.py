"""``python -m mllp_trio``: the same as the ``mllp-trio`` command."""

from mllp_trio._cli import main

main()
