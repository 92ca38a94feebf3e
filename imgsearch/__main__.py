"""`python -m imgsearch` runs the CLI."""

from .cli import main

main()
