"""Search modes, filters, "more like this", the score cut-off and `imgsearch eval` on coco-mini."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from imgsearch import ImageSearch
from imgsearch.config import load_settings
from imgsearch.errors import ConfigError
from imgsearch.evaluation import run_eval
from imgsearch.search.plan import SearchFilters, quote

from conftest import make_image

# Whole runs of the real command, a cluster or many kills: left out of the quick loop.
pytestmark = pytest.mark.slow

HOSTILE_FOLDERS = ['quo"te', "back\\slash", 'x" or true or "', "it's"]


@pytest.fixture
def library(tmp_path, embedder, store_uri):
    """Pictures with sidecar captions in folders whose names try to break filter expressions."""
    root = tmp_path / "library"
    captions = {
        "plain/dog.jpg": "A brown dog runs across a green park chasing a ball.",
        "plain/IMG_2041.png": "Snow covered mountains under a clear blue sky.",
        'quo"te/cat.jpg': "A grey cat sleeps on a red sofa.",
        "back\\slash/boat.jpg": "A small fishing boat on a calm lake at sunrise.",
        "it's/bike.jpg": "A red bicycle leaning against a brick wall.",
    }
    for number, (relative, caption) in enumerate(captions.items()):
        path = root / relative
        # Distinct pixels: the same picture at two paths would share one caption.
        make_image(path, color=(40 * number, 90, 200), size=(640, 480) if "dog" in relative else (64, 48))
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    engine = ImageSearch(captioner="captions", embedder=embedder, milvus_uri=store_uri, collection="quality")
    report = engine.index([root])
    assert report.new == len(captions) and not report.failed
    yield engine, root
    engine.store.drop()
    engine.close()


def names(hits) -> list[str]:
    return [Path(hit.path).name for hit in hits]


def test_modes_find_by_meaning_and_by_file_name(library):
    engine, _ = library
    assert names(engine.query("a puppy playing outside", k=1, mode="dense")) == ["dog.jpg"]
    assert names(engine.query("a puppy playing outside", k=1))[0] == "dog.jpg"  # default mode
    if engine.store.keyword_search_enabled:
        assert names(engine.query("IMG_2041.png", k=1, mode="keyword")) == ["IMG_2041.png"]
        assert names(engine.query("IMG_2041", k=1)) == ["IMG_2041.png"]  # hybrid leans on keywords
        assert names(engine.query("bicycle", k=1, mode="keyword")) == ["bike.jpg"]
    else:  # a Milvus 2.3 server has no BM25: hybrid falls back to dense, keyword mode says why
        with pytest.raises(ConfigError, match="keyword search needs"):
            engine.query("bicycle", mode="keyword")
        assert len(engine.query("bicycle", k=2)) == 2


@pytest.mark.parametrize("folder", HOSTILE_FOLDERS)
def test_folder_filter_values_neither_break_nor_widen_a_query(library, folder):
    engine, root = library
    hits = engine.query("a picture", k=10, mode="dense", filters=SearchFilters(folder=str(root / folder)))
    expected = sorted(p.name for p in (root / folder).glob("*.*g")) if (root / folder).exists() else []
    assert sorted(names(hits)) == expected
    assert all(Path(hit.path).parent == root / folder for hit in hits)


def test_filters_on_type_size_and_date(library):
    engine, root = library
    everything = SearchFilters(folder=str(root))
    assert len(engine.query("a picture", k=10, mode="dense", filters=everything)) == 5
    assert names(engine.query("a picture", k=10, mode="dense", filters=SearchFilters(file_types=("png",)))) == [
        "IMG_2041.png"
    ]
    assert names(engine.query("a picture", k=10, mode="dense", filters=SearchFilters(min_width=600))) == ["dog.jpg"]
    # No EXIF here: the date taken is the file's modification time.
    today = datetime.now(timezone.utc).date().isoformat()
    assert len(engine.query("a picture", k=10, mode="dense", filters=SearchFilters(taken_after=today))) == 5
    assert engine.query("a picture", k=10, mode="dense", filters=SearchFilters(taken_before="2001-01-01")) == []
    with pytest.raises(ConfigError, match="taken_after must be a date"):
        engine.query("a picture", filters=SearchFilters(taken_after="last tuesday"))


def test_more_like_this_and_min_score(library):
    engine, root = library
    similar = engine.similar(root / "plain" / "dog.jpg", k=4, min_score=-1)
    assert "dog.jpg" not in names(similar) and len(similar) == 4
    with pytest.raises(ConfigError, match="is not in the index"):
        engine.similar(root / "nowhere.jpg")
    assert engine.query("quantum chromodynamics lecture notes", k=5, mode="dense", min_score=0.5) == []
    assert names(engine.query("a dog chasing a ball in a park", k=5, mode="dense", min_score=0.5)) == ["dog.jpg"]


def test_exif_date_and_camera_are_filterable(tmp_path, embedder):
    folder = tmp_path / "camera"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 80D"
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 10:30:00"
    Image.new("RGB", (64, 48), (10, 120, 10)).save(folder / "old.jpg", exif=exif)
    make_image(folder / "new.jpg", color=(250, 250, 0))
    for name in ("old", "new"):
        (folder / f"{name}.txt").write_text(f"A photo called {name}.", encoding="utf-8")
    with ImageSearch(captioner="captions", embedder=embedder) as engine:
        engine.index([folder])
        hit = engine.query("a photo", k=5, filters=SearchFilters(camera="Canon EOS 80D"))
        assert names(hit) == ["old.jpg"]
        assert hit[0].metadata["taken_at"] == datetime(2019, 7, 14, 10, 30, tzinfo=timezone.utc).timestamp()
        assert names(engine.query("a photo", k=5, filters=SearchFilters(taken_before="2020-01-01"))) == ["old.jpg"]
        assert names(engine.query("a photo", k=5, filters=SearchFilters(taken_after="2020-01-01"))) == ["new.jpg"]


def test_quote_escapes_everything_that_could_end_a_literal():
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_cli_query_mode_filters_like_and_no_good_match(tmp_path, captioned_folder, embedder):
    env_run = [sys.executable, "-m", "imgsearch"]
    assert (
        subprocess.run(
            [*env_run, "index", str(captioned_folder), "--captioner", "captions"], capture_output=True
        ).returncode
        == 0
    )
    dog = next(captioned_folder.glob("dog.*"))
    result = subprocess.run(
        [*env_run, "query", "--like", str(dog), "--json", "--folder", str(captioned_folder), "-k", "2"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 2 and str(dog) not in [hit["path"] for hit in hits]
    result = subprocess.run(
        [*env_run, "query", "stock market chart", "--min-score", "0.9", "--mode", "dense"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "no good match" in result.stderr
    result = subprocess.run([*env_run, "query", "dog", "--mode", "fuzzy"], capture_output=True, text=True)
    assert result.returncode != 0 and "unknown search mode 'fuzzy'" in result.stderr


def test_eval_on_coco_mini_oracle_reaches_its_floor(coco_mini, embedder):
    """The measured levels are R@1 71.9 / R@5 95.9 / R@10 98.7 (captions) and 100 (file names)."""
    report = run_eval(coco_mini, load_settings({}), embedder=embedder)
    scores = {(s.query_set, s.mode): s for s in report.scores}
    assert report.images == 159
    assert scores["captions", "dense"].queries == 159 * 4
    hybrid, dense = scores["captions", "hybrid"], scores["captions", "dense"]
    assert hybrid.recall[1] >= 69 and hybrid.recall[5] >= 94 and hybrid.recall[10] >= 97
    assert hybrid.mrr >= dense.mrr - 1e-9  # the default is never worse than dense-only
    assert scores["file names", "hybrid"].recall[1] == 100
    assert scores["file names", "keyword"].recall[1] == 100
    assert scores["rare words", "hybrid"].recall[1] >= scores["rare words", "dense"].recall[1] + 10
