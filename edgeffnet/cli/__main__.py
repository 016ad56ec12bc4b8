"""`python -m edgeffnet.cli`: the same as the `edgeffnet` console script."""

from edgeffnet.cli import main

main()
