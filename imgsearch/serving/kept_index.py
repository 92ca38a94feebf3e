"""The kept-loaded index answers queries itself: the fast way in for `imgsearch query`.

A command that searches an embedded index would import the Milvus client, connect and load
the embedder — most of a cold query's time. The process that keeps the index loaded
(store.lite_keeper) has all of that loaded already, so it also listens on a socket of its own,
in the same private folder as the index's socket, and answers one JSON request per connection:
the command's settings and its query in, the hits (or the library error) out. The answer is
what ImageSearch.query or .similar returns in the command's own process: the same engine code
runs, in the same folder, with the same settings, and takes the index's lock for each answer
like any other reading command: it never waits for an index run, which writes through the same
server.

Anything short of an answer (no keeper, another file, a broken connection) sends the command
the ordinary way; an error from the library comes back as that error.

Run as: python -m imgsearch.serving.kept_index DB_PATH IDLE_SECONDS
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..store.connection import lite_file
from ..store.lite.keeper import mark_used, read_note, serve

if TYPE_CHECKING:
    from ..config import Settings
    from ..engine import ImageSearch
    from ..search.plan import SearchFilters
    from ..search.relevance import SearchHits
    from ..store.lite.server import LiteServer

# Waiting for an answer: the first one loads the embedder (and may export it once).
_ANSWER_TIMEOUT = 300.0
_MAX_REQUEST = 1 << 20
# Engines kept loaded for different settings (another embedder, another device).
_MAX_ENGINES = 2
_SECRETS = ("api_key", "serve_token")


def search(settings: Settings, request: dict[str, Any]) -> SearchHits:
    """The hits for request, whichever process answers: the one keeping settings' embedded index
    loaded where it can, else an engine here. Both run the same engine call (filtered, floored
    and in the order request's "sort" asks for), so the answers are the same.

    request: as for ask_keeper. Raises the library's error, from either.
    """
    hits = ask_keeper(settings, request)
    if hits is not None:
        return hits
    from ..engine import ImageSearch

    with ImageSearch(settings) as engine:
        return _search(engine, request)


def ask_keeper(settings: Settings, request: dict[str, Any]) -> SearchHits | None:
    """The hits for request from the process keeping settings' embedded index loaded; None
    when no such process can answer (the caller then searches the ordinary way).

    request: "text", "like" or "image" (paths as text), and "k", "mode", "filters" (SearchFilters
    fields), "min_score", "sort". Raises the library's error when the engine there raised one.
    """
    from ..search.plan import check_sort

    if not settings.uses_embedded_store or settings.keep_loaded <= 0:
        return None
    db_path = lite_file(settings.resolved_milvus_uri)
    note = read_note(db_path)
    if note is None or not note.answers or not note.serves(db_path) or not note.process_alive():
        return None
    mark_used(db_path)
    message = {"settings": _settings_as_json(settings), "cwd": os.getcwd(), **request}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(_ANSWER_TIMEOUT)
            connection.connect(note.answers)
            connection.sendall(json.dumps(message).encode() + b"\n")
            connection.shutdown(socket.SHUT_WR)
            answer = json.loads(_read_all(connection))
    except (OSError, ValueError):
        return None
    if "error" in answer:
        raise _library_error(answer["error"])
    # A keeper started before answers said their order would answer in score order.
    if "hits" not in answer or answer.get("sort", "score") != check_sort(request.get("sort")):
        return None
    from ..results import SearchHit
    from ..search.relevance import SearchHits

    # caption_pending and captions are said by to_dict() and derived from the hit, not fields.
    derived = ("caption_pending", "captions")
    hits = [SearchHit(**{name: value for name, value in hit.items() if name not in derived}) for hit in answer["hits"]]
    # What the floor dropped, so "no good match" reads the same as from a search in this process.
    return SearchHits(hits, floor=answer.get("floor"), below_floor=int(answer.get("below_floor") or 0))


class QueryAnswerer:
    """The keeper's side: one engine per settings, loaded once, answering one query at a time."""

    def __init__(self, db_path: Path, server: LiteServer):
        self.db_path = db_path
        self.server = server
        self.path = server.folder / "queries.sock"
        self._engines: dict[str, ImageSearch] = {}
        # One answer at a time: an engine (and its embedder) serves one caller.
        self._answering = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._accept, name="answering queries", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._answering:
            for engine in self._engines.values():
                with contextlib.suppress(Exception):
                    engine.close()
            self._engines.clear()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # stopped
            with connection:
                try:
                    connection.settimeout(10.0)
                    request = json.loads(_read_all(connection, _MAX_REQUEST))
                    answer = self.answer(request)
                    connection.sendall(json.dumps(answer).encode())
                except (OSError, ValueError):
                    continue

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """{"hits": [...], "floor": ..., "below_floor": ...}, {"error": {...}} from the library, or
        {"unavailable": why}."""
        with self._answering:
            try:
                settings = _settings_from_json(request["settings"])
                if lite_file(settings.resolved_milvus_uri) != self.db_path:
                    return {"unavailable": "another index"}
                # Relative paths in the query (--like, --folder) mean what they mean to the command.
                os.chdir(request["cwd"])
                engine = self._engine_for(settings)
            except Exception as exc:  # noqa: BLE001 - the command then searches itself
                return {"unavailable": f"{type(exc).__name__}: {exc}"}
            mark_used(self.db_path)
            try:
                hits = _search(engine, request)
            except errors.ImgsearchError as exc:
                return {"error": {"type": type(exc).__name__, "message": str(exc)}}
            except Exception as exc:  # noqa: BLE001
                return {"unavailable": f"{type(exc).__name__}: {exc}"}
            finally:
                # The connection is closed after each answer; the embedder stays loaded.
                with contextlib.suppress(Exception):
                    engine.close()
            from ..search.plan import check_sort
            from ..search.relevance import floor_facts

            facts = floor_facts(hits)
            return {
                "hits": [hit.to_dict() for hit in hits],
                "floor": facts["floor"],
                "below_floor": facts["below_floor"],
                "sort": check_sort(request.get("sort")),
            }

    def _engine_for(self, settings: Settings) -> ImageSearch:
        from ..engine import ImageSearch
        from ..store import MilvusStore

        key = json.dumps(_settings_as_json(settings), sort_keys=True)
        engine = self._engines.pop(key, None)  # put back last: the least used goes first
        if engine is None:
            if len(self._engines) >= _MAX_ENGINES:
                self._engines.pop(next(iter(self._engines))).close()
            store = MilvusStore(
                str(self.db_path), settings.collection, settings.milvus_token, hosted_at=self.server.uri
            )
            engine = ImageSearch(settings, store=store)
        self._engines[key] = engine
        return engine


def _search(engine: ImageSearch, request: dict[str, Any]) -> SearchHits:
    filters = _filters(request.get("filters") or {})
    k, min_score, sort = int(request.get("k", 10)), request.get("min_score"), request.get("sort") or "score"
    if request.get("like") is not None:
        return engine.similar(request["like"], k=k, filters=filters, min_score=min_score, sort=sort)
    if request.get("image") is not None:
        return engine.query_image(request["image"], k=k, filters=filters, min_score=min_score, sort=sort)
    return engine.query(
        request.get("text") or "", k=k, mode=request.get("mode"), filters=filters, min_score=min_score, sort=sort
    )


def _filters(given: dict[str, Any]) -> SearchFilters:
    from ..search.plan import SearchFilters

    return SearchFilters(**{**given, "file_types": tuple(given.get("file_types") or ())})


def _settings_as_json(settings: Settings) -> dict[str, Any]:
    """Every setting but the secrets (a query needs none), paths as text."""
    values = {}
    for field in dataclasses.fields(settings):
        if field.name not in _SECRETS:
            value = getattr(settings, field.name)
            values[field.name] = str(value) if isinstance(value, Path) else value
    return values


def _settings_from_json(given: dict[str, Any]) -> Settings:
    from ..config import Settings

    names = {field.name for field in dataclasses.fields(Settings)}
    values = {name: value for name, value in given.items() if name in names}
    values["data_dir"] = Path(values["data_dir"])
    values["config_file"] = Path(values["config_file"]) if values.get("config_file") else None
    return Settings(**values)


def _library_error(error: dict[str, Any]) -> errors.ImgsearchError:
    kind = getattr(errors, str(error.get("type")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.ImgsearchError)):
        kind = errors.ImgsearchError
    return kind(str(error.get("message", "")))


def _read_all(connection: socket.socket, limit: int = 1 << 30) -> bytes:
    chunks, size = [], 0
    while chunk := connection.recv(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError("request too large")
    return b"".join(chunks)


def main(argv: list[str]) -> int:
    db_path = lite_file(argv[0])

    def answer_queries(server: LiteServer) -> tuple[str, Any]:
        answerer = QueryAnswerer(db_path, server)
        return str(answerer.path), answerer.stop

    return serve(db_path, float(argv[1]), on_serving=answer_queries)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
