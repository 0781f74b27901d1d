"""``python -m fedstream.cli``."""

from fedstream.cli import main

main()
