"""`imgsearch export`: JSONL and CSV of every indexed picture, streamed, with clear errors."""

import csv
import io
import json
import random
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from imgsearch import ImageSearch
from imgsearch.store import ROW_FIELDS, MilvusStore
from imgsearch.upkeep.export import export_columns, write_rows

from subprocess_helpers import run_imgsearch


@pytest.mark.slow
def test_export_jsonl_and_csv_hold_the_same_rows(captioned_folder, tmp_path):
    (captioned_folder / "dog.txt").write_text('A brown dog, "Rex", runs\nacross a park.')
    assert run_imgsearch("index", captioned_folder, "--captioner", "captions").returncode == 0

    jsonl = run_imgsearch("export")
    assert jsonl.returncode == 0, jsonl.stderr
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(records) == 3 and "exported 3 images" in jsonl.stderr
    assert list(records[0])[:2] == ["path", "caption"]
    assert {"content_hash", "width", "height", "mtime", "captioner"} <= set(records[0])
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in records}
    assert by_name["dog.jpg"]["caption"] == 'A brown dog, "Rex", runs across a park.'
    assert by_name["dog.jpg"]["width"] == 64 and by_name["dog.jpg"]["height"] == 48

    out = tmp_path / "index.csv"
    proc = run_imgsearch("export", "--format", "csv", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"exported": 3, "format": "csv", "out": str(out)}
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == 3
    assert {row["path"]: row["caption"] for row in rows} == {r["path"]: r["caption"] for r in records}
    assert {row["path"]: int(row["size"]) for row in rows} == {r["path"]: r["size"] for r in records}


def test_export_errors_are_one_line_and_leave_files_alone(tmp_path):
    kept = tmp_path / "kept.jsonl"
    kept.write_text("earlier export\n")
    proc = run_imgsearch("export", "--out", kept)  # nothing indexed yet
    assert proc.returncode == 3 and "imgsearch index FOLDER" in proc.stderr
    assert kept.read_text() == "earlier export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.jsonl"]  # no partial file left behind

    bad_format = run_imgsearch("export", "--format", "xml")
    assert bad_format.returncode == 2 and "unknown --format 'xml'" in bad_format.stderr

    bad_folder = run_imgsearch("export", "--out", tmp_path / "missing" / "x.csv")
    assert bad_folder.returncode == 2
    assert f"folder {tmp_path / 'missing'} does not exist" in bad_folder.stderr
    for result in (proc, bad_format, bad_folder):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _filled_store(uri: str, collection: str, rows: int) -> MilvusStore:
    store = MilvusStore(uri, collection)
    store.open("test-embedder", lambda: 8)
    rng = random.Random(rows)
    for start in range(0, rows, 2000):
        store.upsert_rows(
            [
                {
                    "id": f"{i:032x}",
                    "vector": [rng.random() + 0.1 for _ in range(8)],
                    "path": f"/photos/{i:06d}.jpg",
                    "caption": f"caption number {i} " * 6,
                    "captioner": "test",
                    "content_hash": f"{i:064x}",
                    "size": i,
                    "mtime": float(i),
                    "width": 640,
                    "height": 480,
                    "indexed_at": 0.0,
                }
                for i in range(start, min(rows, start + 2000))
            ]
        )
    return store


class _CountingSink(io.TextIOBase):
    """Counts what is written and keeps nothing, so only the exporter's own memory is measured."""

    def __init__(self):
        self.lines = 0

    def write(self, text):
        self.lines += text.count("\n")
        return len(text)


def _peak_bytes(consume) -> tuple[int, int]:
    tracemalloc.start()
    try:
        result = consume()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_export_memory_stays_flat_as_the_index_grows(milvus_server, tmp_path):
    """Against a server, whose memory is its own, the exporting process holds one page at a time."""
    small = _filled_store(milvus_server.uri, "export_small", 1_500)
    large = _filled_store(milvus_server.uri, "export_large", 6_000)
    try:
        peaks = {}
        for name, store in (("small", small), ("large", large)):
            engine = ImageSearch(store=store, data_dir=tmp_path)
            sink = _CountingSink()
            written, peaks[name] = _peak_bytes(
                lambda engine=engine, sink=sink: write_rows(
                    engine.records(batch_size=500), sink, "jsonl", export_columns(ROW_FIELDS)
                )
            )
            assert written == sink.lines == {"small": 1_500, "large": 6_000}[name]
        holding_all, held_peak = _peak_bytes(lambda: list(ImageSearch(store=large, data_dir=tmp_path).records()))
        assert len(holding_all) == 6_000
    finally:
        small.drop()
        large.drop()
        small.close()
        large.close()
    print(
        f"exporter peak: {peaks['small']:,} B at 1,500 rows, {peaks['large']:,} B at 6,000; "
        f"holding 6,000 rows: {held_peak:,} B"
    )
    # Four times the rows, same page size: the peak stays flat, far under holding every row.
    assert peaks["large"] < 1.25 * peaks["small"], peaks
    assert peaks["large"] < held_peak / 3, (peaks, held_peak)


@pytest.mark.slow
def test_export_from_milvus_lite_streams_every_row(tmp_path):
    store = _filled_store(str(tmp_path / "lite.db"), "images", 2_345)
    try:
        engine = ImageSearch(store=store, data_dir=tmp_path)
        out = io.StringIO()
        written = write_rows(engine.records(batch_size=500), out, "csv", export_columns(ROW_FIELDS))
    finally:
        store.close()
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert written == len(rows) == 2_345
    assert sorted(int(row["size"]) for row in rows) == list(range(2_345))  # each row once, none lost


def test_export_and_serve_have_help_and_load_nothing_heavy():
    code = (
        "import sys\n"
        "from imgsearch.cli import app\n"
        "for command in ('export', 'serve'):\n"
        "    try:\n        app([command, '--help'])\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'pymilvus', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert "--format" in proc.stdout and "--out" in proc.stdout
    assert "--folder" in proc.stdout and "--new-token" in proc.stdout and "--json" in proc.stdout


def test_export_writes_dates_as_iso_8601(captioned_folder):
    assert run_imgsearch("index", captioned_folder, "--captioner", "captions").returncode == 0
    proc = run_imgsearch("export")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records
    for record in records:
        modified = datetime.fromisoformat(record["mtime"])
        assert modified.utcoffset() == timedelta(0)  # a real instant, in UTC
        assert abs(modified.timestamp() - Path(record["path"]).stat().st_mtime) < 1
        assert abs(datetime.fromisoformat(record["indexed_at"]).timestamp() - time.time()) < 600
        # The test pictures carry no EXIF date: taken_at is the file's time, on its clock.
        assert datetime.fromisoformat(record["taken_at"]).tzinfo is None
