"""The Milvus store against Milvus Lite and a real Milvus server on 127.0.0.1."""

import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from imgsearch.errors import EmbedderMismatchError, IndexBusyError, StoreError
from imgsearch.store import MilvusStore


def _row(key, vector, path, caption="a caption", **extra):
    row = {
        "id": key,
        "vector": vector,
        "path": path,
        "caption": caption,
        "captioner": "test:1",
        "content_hash": key * 2,
        "size": 10,
        "mtime": 1.5,
        "width": 4,
        "height": 3,
        "indexed_at": 2.0,
    }
    row.update(extra)
    return row


def _unit(i, dim=8):
    return [1.0 if j == i else 0.0 for j in range(dim)]


@pytest.fixture
def store(store_uri):
    store = MilvusStore(store_uri, collection=f"t_{uuid.uuid4().hex[:8]}")
    yield store
    try:
        store.drop()
    finally:
        store.close()


@pytest.mark.slow
def test_create_insert_search_get_delete(store):
    store.open("test-embedder", lambda: 8)
    assert store.properties()["imgsearch.embedder"] == "test-embedder"
    assert store.properties()["imgsearch.dimension"] == "8"
    store.upsert_rows([_row(f"k{i}", _unit(i), f"/p/{i}.jpg", caption=f"c{i}") for i in range(5)])
    assert store.count() == 5
    hits = store.search(_unit(3), k=2)
    assert hits[0]["id"] == "k3" and hits[0]["path"] == "/p/3.jpg" and hits[0]["caption"] == "c3"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[1]["score"] < 0.5
    rows = store.get_rows(["k1", "k4", "missing"])
    assert set(rows) == {"k1", "k4"} and rows["k1"]["size"] == 10 and rows["k1"]["mtime"] == 1.5
    # Upsert by the same id replaces, never duplicates.
    store.upsert_rows([_row("k1", _unit(1), "/p/1.jpg", caption="new")])
    assert store.count() == 5 and store.get_rows(["k1"])["k1"]["caption"] == "new"
    store.delete_ids(["k0", "k1"])
    assert store.count() == 3
    assert sorted(row["id"] for row in store.iter_rows(batch_size=2)) == ["k2", "k3", "k4"]


@pytest.mark.slow
def test_lite_searches_exactly_and_still_reads_indexes_made_with_ivf(tmp_path, monkeypatch):
    """New Milvus Lite indexes are FLAT; one made with the earlier IVF_FLAT/cosine index
    answers as before, searched with the metric it was made with."""
    from imgsearch.store import schema

    rows = [_row(f"k{i}", _unit(i), f"/p/{i}.jpg") for i in range(5)]
    first = MilvusStore(str(tmp_path / "index.db"), collection="made_before")
    monkeypatch.setattr(
        schema, "LITE_VECTOR_INDEX", {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 256}}
    )
    first.open("test-embedder", lambda: 8)
    monkeypatch.undo()
    second = first.sibling("made_now")
    second.open("test-embedder", lambda: 8)
    try:
        for store, (index_type, metric) in ((first, ("IVF_FLAT", "COSINE")), (second, ("FLAT", "IP"))):
            store.upsert_rows(rows)
            described = store.client.describe_index(store.physical, "vector")
            assert (described["index_type"], described["metric_type"]) == (index_type, metric)
            hits = store.search(_unit(3), k=2)
            assert hits[0]["id"] == "k3" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
            assert hits[1]["score"] == pytest.approx(0.0, abs=1e-4)
    finally:
        first.close()


@pytest.mark.slow
def test_reopen_and_mismatched_embedder(store):
    store.open("model-a", lambda: 8)
    store.upsert_rows([_row("k0", _unit(0), "/p/0.jpg")])
    store.record_captioner("cap:one")
    store.record_captioner("cap:one")
    store.record_captioner("cap:two")
    store.close()
    reopened = MilvusStore(store.uri, store.collection)
    reopened.open("model-a", lambda: pytest.fail("dimension must not be needed"))
    assert reopened.count() == 1 and reopened.captioners() == ["cap:one", "cap:two"]
    with pytest.raises(EmbedderMismatchError, match="built with model-a"):
        MilvusStore(store.uri, store.collection).open("model-b", lambda: 8)
    with pytest.raises(EmbedderMismatchError, match="8-d vectors"):
        reopened.search([0.5] * 16, k=1)
    reopened.close()


def test_missing_collection_is_a_clear_error(store):
    with pytest.raises(StoreError, match="run `imgsearch index FOLDER` first"):
        store.open("x", lambda: 8, create=False)


@pytest.mark.slow
def test_long_caption_is_trimmed_not_rejected(store):
    store.open("x", lambda: 8)
    store.upsert_rows([_row("k0", _unit(0), "/p/0.jpg", caption="é" * 9000)])
    caption = store.get_rows(["k0"])["k0"]["caption"]
    assert 0 < len(caption.encode()) <= 8192


def test_unreachable_server_is_one_line_error():
    with pytest.raises(StoreError) as info:
        MilvusStore("http://127.0.0.1:9", "x").exists()
    assert "127.0.0.1:9" in str(info.value) and "\n" not in str(info.value)


def test_a_reader_is_answered_while_another_process_writes_and_a_second_writer_waits_its_turn(tmp_path):
    db = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from imgsearch.store import MilvusStore
            store = MilvusStore({str(db)!r}, "x")
            with store.writing():
                store.open("model", lambda: 8)
                print("writing", flush=True)
                sys.stdin.readline()
            store.close()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    writer = None
    try:
        assert holder.stdout.readline().strip() == "writing"
        # A reader in this process is answered through the writer's own server, at once.
        reader = MilvusStore(str(db), "x")
        assert reader.exists() is True
        reader.close()
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                from imgsearch.store import MilvusStore
                store = MilvusStore({str(db)!r}, "x")
                with store.writing():
                    store.open("model", lambda: 8)
                    print("wrote", flush=True)
                store.close()
            """),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The second writer says whom it waits for, and waits.
        line = writer.stderr.readline()
        assert f"waiting for pid {holder.pid} " in line and str(db) in line, line
        time.sleep(1.0)
        assert writer.poll() is None
        holder.stdin.write("done\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0 and out.strip() == "wrote", err
    finally:
        for process in (holder, writer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert MilvusStore(str(db), "x").exists() is True


def test_second_process_on_embedded_file_gets_busy_error(tmp_path):
    db = tmp_path / "busy.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from pymilvus import MilvusClient
            MilvusClient({str(db)!r}); print("open", flush=True); time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(IndexBusyError, match="in use by another program"):
            MilvusStore(str(db), "x").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_milvus_lite_server_still_starting_is_asked_again_not_reported(tmp_path, monkeypatch):
    """Milvus Lite answers before it is ready when just started: such a refusal is asked again,
    for a while; any other failure is said at once."""
    from pymilvus.exceptions import MilvusException

    from imgsearch.store import link as store_link

    link = store_link.StoreLink(str(tmp_path / "index.db"))
    starting = 'Assert "init_flag_ == true" => Mmap manager has not been init. at MmapManager.h:96 : segcore error'
    calls: list[float] = []

    def load_while_starting(refusals: int, message: str = starting):
        def load() -> str:
            calls.append(time.monotonic())
            if len(calls) <= refusals:
                raise MilvusException(message=message)
            return "loaded"

        return load

    assert link.call("load catalog", load_while_starting(3)) == "loaded" and len(calls) == 4
    calls.clear()
    with pytest.raises(StoreError, match="collection not found"):
        link.call("load catalog", load_while_starting(1, "collection not found"))
    assert len(calls) == 1
    calls.clear()
    monkeypatch.setattr(store_link, "STARTING_SECONDS", 0.5)
    with pytest.raises(StoreError, match="Mmap manager has not been init"):
        link.call("load catalog", load_while_starting(1000))
    assert len(calls) >= 2 and calls[-1] - calls[0] < 5
