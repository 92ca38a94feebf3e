"""`imgsearch serve`: an HTTP API and a web page over one ImageSearch engine (FastAPI + uvicorn).

Everything here imports FastAPI; nothing outside this package imports it, so the rest of
imgsearch works without the `serve` extra.
"""
