"""Image vectors beside captions: tiny random-weight CLIP and SigLIP models, real Milvus Lite.

Random vision towers still map near-identical pixels close together: a resized, recompressed
copy of a photo scores ~0.9999 against it, while the tiny SigLIP keeps different photos below
0.95 (checked here before relying on it). They say nothing about retrieval quality.
"""

from __future__ import annotations

import json
import shutil
import uuid

import numpy as np
import pytest
from PIL import Image

from imgsearch import ImageSearch
from imgsearch.embedders.visual import VisualEmbedder
from imgsearch.errors import ConfigError, EmbedderError, EmbedderMismatchError, ImageLoadError
from imgsearch.pictures.files import path_key

from served_visual import PHOTOS, photo_folder
from subprocess_helpers import imgsearch_env, run_imgsearch
from tiny_models import build_tiny_bert, build_tiny_clip, build_tiny_siglip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory):
    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture
def photos(coco_mini, tmp_path):
    """PHOTOS coco-mini photos, with a captions file naming each."""
    return photo_folder(coco_mini, tmp_path)


def engine_for(photos, embedder, visual_dir, **settings):
    return ImageSearch(
        embedder=embedder,
        captioner="captions",
        captions_file=str(photos.parent / "captions.jsonl"),
        visual_model=str(visual_dir),
        device="cpu",
        **settings,
    )


def recompressed_copy(source, target, scale=0.5, quality=60):
    with Image.open(source) as picture:
        small = picture.convert("RGB").resize((int(picture.width * scale), int(picture.height * scale)))
    small.save(target, "JPEG", quality=quality)
    return target


def indexed_copy(source, target, recompress=True, **settings):
    """A copy of source in its folder (resized and recompressed, or its very bytes), captioned
    in the folder's captions file like the others."""
    if recompress:
        recompressed_copy(source, target, **settings)
    else:
        shutil.copy(source, target)
    with open(source.parent.parent / "captions.jsonl", "a") as captions:
        captions.write(json.dumps({"image": target.name, "caption": f"a copy of {source.name}"}) + "\n")
    return target


def test_the_visual_model_gives_unit_vectors_in_one_space(tiny_clip_dir, tiny_siglip_dir, photos):
    pictures = [Image.open(path).convert("RGB") for path in sorted(photos.glob("*.jpg"))[:3]]
    for folder, dimension in ((tiny_clip_dir, 16), (tiny_siglip_dir, 32)):
        visual = VisualEmbedder(str(folder), device="cpu")
        assert visual.dimension == dimension
        assert visual.image_side == 32
        vectors = np.array(visual.encode_images(pictures) + visual.encode_texts(["a red dog", "un chien rouge"]))
        assert vectors.shape == (5, dimension)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_siglip_text_is_the_same_alone_or_beside_a_longer_one(tiny_siglip_dir):
    visual = VisualEmbedder(str(tiny_siglip_dir), device="cpu")
    alone = visual.encode_query("a red dog")
    [beside, _] = visual.encode_texts(["a red dog", "un chien rouge dans la rue avec le chat"])
    assert np.allclose(alone, beside, atol=1e-5)


def test_a_model_that_is_not_image_text_is_refused_in_one_line(tmp_path):
    bert = build_tiny_bert(tmp_path / "bert")
    with pytest.raises(ConfigError) as refused:
        VisualEmbedder(str(bert), device="cpu").dimension  # noqa: B018 - the property loads the model
    message = str(refused.value)
    assert "not an image–text embedding model" in message and str(bert) in message and "\n" not in message
    with pytest.raises(EmbedderError, match=r"cannot load visual model .*no such folder"):
        VisualEmbedder(str(tmp_path / "missing"), device="cpu").dimension  # noqa: B018 - the property loads the model


def test_a_picture_queried_by_itself_comes_first(tiny_clip_dir, photos, embedder):
    with engine_for(photos, embedder, tiny_clip_dir) as engine:
        report = engine.index([photos])
        assert report.new == PHOTOS and not report.failed
        assert engine.status().visual_model == str(tiny_clip_dir)
        for path in sorted(photos.glob("*.jpg"))[:3]:
            hits = engine.query_image(path, k=3)
            assert hits[0].path == str(path)
            # Indexed from a JPEG decoded at reduced scale (draft mode), queried from the whole file.
            assert hits[0].score > 0.99 and hits[0].score > hits[1].score
        # A picture that is not indexed, passed as an image: its resized copy's original is first.
        target = sorted(photos.glob("*.jpg"))[0]
        copy = recompressed_copy(target, photos.parent / "elsewhere.jpg")
        assert engine.query_image(Image.open(copy), k=1)[0].path == str(target)
        # --like uses the picture's image vector: its recompressed copy is not indexed, so the
        # nearest other picture is whatever the image vectors say, not a caption neighbour.
        stored = np.array([engine.store.get_vector(path_key(p), "visual") for p in sorted(photos.glob("*.jpg"))])
        like = engine.similar(target, k=1)[0]
        others = stored @ stored[0]
        others[0] = -2
        assert like.path == str(sorted(photos.glob("*.jpg"))[int(np.argmax(others))])


def test_words_in_another_language_reach_the_image_vectors(tiny_clip_dir, photos, embedder):
    with engine_for(photos, embedder, tiny_clip_dir) as engine:
        engine.index([photos])
        paths = sorted(photos.glob("*.jpg"))
        pictures = np.array([engine.store.get_vector(path_key(p), "visual") for p in paths])
        for text in ("un chien rouge dans la rue", "une voiture dans le parc"):
            query = np.array(engine.visual.encode_query(text))
            expected = [str(paths[i]) for i in np.argsort(-(pictures @ query))[:3]]
            # A random text tower scores words against pictures below zero as often as above.
            hits = engine.query(text, k=3, mode="visual", min_score=-1)
            assert [hit.path for hit in hits] == expected
            assert hits[0].score == pytest.approx(float(np.max(pictures @ query)), abs=1e-4)
        # hybrid blends both: every picture it returns is one of the indexed ones, best first.
        blended = engine.query("un chien rouge dans la rue", k=PHOTOS, mode="hybrid", min_score=-1)
        assert sorted(hit.path for hit in blended) == [str(p) for p in paths]
        assert [hit.score for hit in blended] == sorted((hit.score for hit in blended), reverse=True)


def test_a_spanish_query_reaches_the_text_tower_as_it_is(tiny_siglip_dir, photos, embedder):
    text = "un perro en el parque"
    with engine_for(photos, embedder, tiny_siglip_dir) as engine:
        engine.index([photos])
        searched: list[tuple[list[float], str]] = []
        search = engine.store.search
        engine.store.search = lambda vector, k, filter="", field="vector": (  # type: ignore[method-assign]
            searched.append((vector, field)) or search(vector, k, filter, field)
        )
        hits = engine.query(text, k=3, mode="visual", min_score=-1)
    assert len(hits) == 3
    [(vector, field)] = searched
    assert field == "visual"
    # The same vector a text tower of its own gives those words: not dropped, not translated.
    tower = VisualEmbedder(str(tiny_siglip_dir), device="cpu")
    assert np.allclose(vector, tower.encode_query(text), atol=1e-5)
    for other in ("", "a dog in the park"):
        assert not np.allclose(vector, tower.encode_query(other), atol=1e-3), other


def test_copies_group_as_duplicates_and_different_photos_do_not(tiny_siglip_dir, photos, embedder):
    originals = sorted(photos.glob("*.jpg"))
    indexed_copy(originals[0], photos / "copy-small.jpg")
    indexed_copy(originals[1], photos / "copy-tiny.jpg", scale=0.3, quality=40)
    indexed_copy(originals[2], photos / "same-bytes.jpg", recompress=False)
    copies = {originals[0]: photos / "copy-small.jpg", originals[1]: photos / "copy-tiny.jpg"}
    with engine_for(photos, embedder, tiny_siglip_dir) as engine:
        report = engine.index([photos])
        assert report.new == PHOTOS + 3, report.failed
        vector = {p: np.array(engine.store.get_vector(path_key(p), "visual")) for p in [*originals, *copies.values()]}
        # The random tower must keep copies closer than different photos for this to mean anything.
        closest_others = max(float(vector[a] @ vector[b]) for a in originals for b in originals if a < b)
        farthest_copy = min(float(vector[a] @ vector[b]) for a, b in copies.items())
        assert farthest_copy > closest_others + 0.001, (farthest_copy, closest_others)
        groups = engine.duplicates(threshold=(farthest_copy + closest_others) / 2)
    assert sorted(groups) == sorted(
        [
            sorted([str(originals[0]), str(photos / "copy-small.jpg")]),
            sorted([str(originals[1]), str(photos / "copy-tiny.jpg")]),
            sorted([str(originals[2]), str(photos / "same-bytes.jpg")]),
        ]
    )


def test_duplicates_without_image_vectors_are_the_same_bytes_only(photos, embedder, tmp_path):
    originals = sorted(photos.glob("*.jpg"))
    indexed_copy(originals[0], photos / "copy-small.jpg")
    indexed_copy(originals[2], photos / "same-bytes.jpg", recompress=False)
    with ImageSearch(
        embedder=embedder, captioner="captions", captions_file=str(photos.parent / "captions.jsonl")
    ) as engine:
        engine.index([photos])
        assert engine.duplicates() == [sorted([str(originals[2]), str(photos / "same-bytes.jpg")])]
        with pytest.raises(ConfigError, match="no image vectors"):
            engine.query_image(originals[0])
        with pytest.raises(ConfigError, match="no image vectors"):
            engine.query("a dog", mode="visual")


def test_image_vectors_are_cached_and_a_rebuild_encodes_nothing(tiny_clip_dir, photos, embedder):
    with engine_for(photos, embedder, tiny_clip_dir) as engine:
        engine.index([photos])
        encoded: list[int] = []
        original = engine.visual.encode_images
        engine.visual.encode_images = lambda images: encoded.append(len(images)) or original(images)  # type: ignore[method-assign]
        again = engine.index([photos], rebuild=True)
        assert again.new == PHOTOS and again.captions_reused == PHOTOS and again.captioned == 0
        assert encoded == []
        assert engine.query_image(sorted(photos.glob("*.jpg"))[0], k=1)[0].path == str(sorted(photos.glob("*.jpg"))[0])


def test_indexing_with_a_visual_model_adds_image_vectors_to_an_index_without_them(tiny_clip_dir, photos, embedder):
    paths = sorted(photos.glob("*.jpg"))
    with ImageSearch(
        embedder=embedder, captioner="captions", captions_file=str(photos.parent / "captions.jsonl")
    ) as engine:
        engine.index([photos])
        before = {row["path"]: row["caption"] for row in engine.records()}
    with engine_for(photos, embedder, tiny_clip_dir) as engine:

        def never(*args, **kwargs):
            raise AssertionError("adding image vectors captioned a picture")

        engine.captioner.caption = never  # type: ignore[method-assign]
        report = engine.index([photos])
        assert report.captioned == 0 and report.unchanged == PHOTOS and not report.failed
        assert report.warnings[0].startswith("adding image vectors: the index was rebuilt from its stored captions")
        assert f"({PHOTOS} pictures, nothing captioned)" in report.warnings[0]
        assert {row["path"]: row["caption"] for row in engine.records()} == before
        assert engine.status().visual_model == str(tiny_clip_dir)
        for path in paths[:3]:
            assert engine.query_image(path, k=1)[0].path == str(path)
        # Each picture's image vector went into the caption cache as it was made.
        hashes = {row["content_hash"] for row in engine.records()}
        assert set(engine.cache.image_vectors(hashes, engine.visual.id)) == hashes
        # Indexing again changes nothing more; --rebuild still works and encodes nothing.
        assert engine.index([photos]).warnings == []
        encoded: list[int] = []
        original = engine.visual.encode_images
        engine.visual.encode_images = lambda images: encoded.append(len(images)) or original(images)  # type: ignore[method-assign]
        rebuilt = engine.index([photos], rebuild=True)
        assert rebuilt.captioned == 0 and rebuilt.captions_reused == PHOTOS and encoded == []
        assert engine.query_image(paths[3], k=1)[0].path == str(paths[3])


def test_an_index_without_image_vectors_still_says_so_to_a_visual_query(photos, embedder):
    with ImageSearch(
        embedder=embedder, captioner="captions", captions_file=str(photos.parent / "captions.jsonl")
    ) as engine:
        engine.index([photos])
    with ImageSearch(embedder=embedder) as engine:
        for attempt in (
            lambda: engine.query("a dog", mode="visual"),
            lambda: engine.query_image(sorted(photos.glob("*.jpg"))[0]),
        ):
            with pytest.raises(ConfigError) as refused:
                attempt()
            message = str(refused.value)
            assert "has no image vectors" in message and "--visual-model" in message and "\n" not in message


def test_adding_image_vectors_leaves_out_deleted_pictures_and_stops_at_unreadable_ones(tiny_clip_dir, photos, embedder):
    paths = sorted(photos.glob("*.jpg"))
    with ImageSearch(
        embedder=embedder, captioner="captions", captions_file=str(photos.parent / "captions.jsonl")
    ) as engine:
        engine.index([photos])
    paths[0].write_bytes(b"\xff\xd8\xff\xe0 no longer a picture")
    with engine_for(photos, embedder, tiny_clip_dir) as engine:
        with pytest.raises(ImageLoadError) as refused:
            engine.index([photos])
        message = str(refused.value)
        assert message.startswith("cannot add image vectors: 1 indexed picture cannot be read")
        assert str(paths[0]) in message and "the index is unchanged" in message and "\n" not in message
        assert engine.store.count() == PHOTOS and not engine.status().visual_model
        # Deleted now: the unreadable one, never encoded, is left out; one whose image vector was
        # cached in the attempt above is carried over, then removed by the run as any deleted picture.
        paths[0].unlink()
        paths[1].unlink()
        report = engine.index([photos])
        assert report.captioned == 0 and not report.failed and report.removed == 1
        assert f"({PHOTOS - 1} pictures, nothing captioned; 1 row of deleted pictures left out)" in report.warnings[0]
        assert sorted(row["path"] for row in engine.records()) == [str(p) for p in paths[2:]]
        assert engine.query_image(paths[2], k=1)[0].path == str(paths[2])


def test_another_visual_model_is_refused_naming_both(tiny_clip_dir, tiny_siglip_dir, photos, embedder):
    with engine_for(photos, embedder, tiny_clip_dir) as engine:
        engine.index([photos])
    with engine_for(photos, embedder, tiny_siglip_dir) as engine:
        for attempt in (lambda: engine.query("a red dog", mode="visual"), lambda: engine.index([photos])):
            with pytest.raises(EmbedderMismatchError) as refused:
                attempt()
            assert str(tiny_clip_dir) in str(refused.value) and str(tiny_siglip_dir) in str(refused.value)
    # Without --visual-model, queries take the model the index records.
    with ImageSearch(embedder=embedder) as engine:
        assert len(engine.query("a red dog", k=2, mode="visual", min_score=-1)) == 2


def test_a_query_picture_that_cannot_be_read_is_one_line(tiny_clip_dir, photos, embedder, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a picture")
    with engine_for(photos, embedder, tiny_clip_dir) as engine:
        engine.index([photos])
        with pytest.raises(ImageLoadError) as refused:
            engine.query_image(broken)
    assert str(broken) in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_the_command_line_searches_by_picture_and_lists_duplicates(tiny_siglip_dir, photos, tmp_path):
    originals = sorted(photos.glob("*.jpg"))
    indexed_copy(originals[0], photos / "copy-small.jpg")
    env = imgsearch_env(tmp_path / "data")
    common = ("--visual-model", str(tiny_siglip_dir), "--device", "cpu")
    indexed = run_imgsearch(
        "index",
        photos,
        "--captioner",
        "captions",
        "--captions-file",
        photos.parent / "captions.jsonl",
        *common,
        "--json",
        env=env,
    )
    assert indexed.returncode == 0, indexed.stderr
    found = run_imgsearch("query", "--image", originals[4], "-k", "2", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["path"] == str(originals[4])
    groups = run_imgsearch("duplicates", "--json", env=env)
    assert groups.returncode == 0, groups.stderr
    assert json.loads(groups.stdout) == [sorted([str(originals[0]), str(photos / "copy-small.jpg")])]
    both = run_imgsearch("query", "dog", "--image", originals[0], env=env)
    assert both.returncode == 2 and "either TEXT" in both.stderr
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    unreadable = run_imgsearch("query", "--image", broken, env=env)
    assert unreadable.returncode != 0 and str(broken) in unreadable.stderr
    assert len([line for line in unreadable.stderr.splitlines() if line.strip()]) == 1


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_milvus_server_without_multi_vector_support_refuses_image_vectors(
    milvus_server, tiny_clip_dir, photos, tmp_path
):
    """Milvus 2.3 (what the `milvus` package runs) holds one vector field per collection."""
    env = imgsearch_env(tmp_path / "data")
    server = ("--uri", milvus_server.uri, "--collection", f"visual_{uuid.uuid4().hex[:8]}")
    captions = ("--captioner", "captions", "--captions-file", photos.parent / "captions.jsonl")
    visual = ("--visual-model", tiny_clip_dir, "--device", "cpu")

    def assert_refused(proc) -> None:
        assert proc.returncode == 2, proc.stderr
        line = _one_line(proc.stderr)
        assert f"the Milvus server at {milvus_server.uri} is version v2.3" in line
        assert "need a Milvus 2.4 or newer server" in line and "leave out --visual-model" in line

    def images() -> dict:
        status = run_imgsearch("status", *server, "--json", env=env, check_code=0)
        return json.loads(status.stdout)

    assert_refused(run_imgsearch("index", photos, *captions, *visual, *server, env=env))
    assert not images()["exists"]
    indexed = run_imgsearch("index", photos, *captions, *server, "--json", env=env, check_code=0)
    assert json.loads(indexed.stdout)["new"] == PHOTOS
    for extra in ((), ("--rebuild",)):
        assert_refused(run_imgsearch("index", photos, *captions, *visual, *server, *extra, env=env))
        # Nothing indexed was lost, nor set aside.
        assert images()["images"] == PHOTOS and images()["visual_model"] is None
    hits = run_imgsearch("query", "a photo", "-k", "3", *server, "--json", env=env, check_code=0)
    assert len(json.loads(hits.stdout)) == 3


@pytest.mark.slow
def test_the_command_line_adds_image_vectors_without_captioning(tiny_clip_dir, photos, tmp_path):
    env = imgsearch_env(tmp_path / "data")
    captions = ("--captioner", "captions", "--captions-file", photos.parent / "captions.jsonl")
    run_imgsearch("index", photos, *captions, "--json", env=env, check_code=0)
    added = run_imgsearch(
        "index", photos, *captions, "--visual-model", tiny_clip_dir, "--device", "cpu", "--json", env=env, check_code=0
    )
    report = json.loads(added.stdout)
    assert report["captioned"] == 0 and report["unchanged"] == PHOTOS and not report["failed"]
    notices = [line for line in added.stderr.splitlines() if "the index was rebuilt from its stored captions" in line]
    assert len(notices) == 1 and "adding image vectors" in notices[0], added.stderr
    picture = sorted(photos.glob("*.jpg"))[5]
    found = run_imgsearch("query", "--image", picture, "-k", "2", "--json", env=env, check_code=0)
    assert json.loads(found.stdout)[0]["path"] == str(picture)
