"""`python -m imgsearch` runs the CLI."""

from .cli import app

app(prog_name="imgsearch")
