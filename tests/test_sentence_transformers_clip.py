"""sentence-transformers CLIP models as --visual-model: the published layout (the CLIP in a
0_CLIPModel module folder, as sentence-transformers/clip-ViT-B-32 has it) and the layout
sentence-transformers saves today, over a tiny random-weight CLIP and real Milvus Lite."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from imgsearch import ImageSearch
from imgsearch.embedders.sentence_transformers_clip import clip_module_folder
from imgsearch.embedders.visual import VisualEmbedder

from served_visual import PHOTOS, photo_folder
from tiny_models import build_tiny_clip

PUBLISHED_MODULES = [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def published_layout(tiny_clip, tmp_path_factory):
    """The CLIP inside a module folder, named by modules.json, nothing at the top but the list."""
    folder = tmp_path_factory.mktemp("st-clip-published")
    shutil.copytree(tiny_clip, folder / "0_CLIPModel")
    (folder / "modules.json").write_text(json.dumps(PUBLISHED_MODULES))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"__version__": {}}))
    return folder


@pytest.fixture(scope="module")
def saved_layout(tiny_clip, tmp_path_factory):
    """The layout sentence-transformers writes when it saves a CLIP today."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import CLIPModel

    folder = tmp_path_factory.mktemp("st-clip-saved")
    SentenceTransformer(modules=[CLIPModel(str(tiny_clip))], device="cpu").save(str(folder))
    return folder


def _picture_vectors(model_dir, pictures):
    return np.array(VisualEmbedder(str(model_dir), device="cpu").encode_images(pictures))


def test_the_module_folder_is_found_in_either_layout(published_layout, saved_layout, tiny_clip):
    assert clip_module_folder(str(published_layout)) == "0_CLIPModel"
    assert clip_module_folder(str(saved_layout)) == ""
    assert clip_module_folder(str(tiny_clip)) is None  # a plain transformers CLIP
    assert clip_module_folder(str(published_layout / "missing")) is None


def test_a_text_sentence_transformer_is_no_clip(tmp_path):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert clip_module_folder(str(tmp_path)) is None
    (tmp_path / "modules.json").write_text("not json")
    assert clip_module_folder(str(tmp_path)) is None


@pytest.mark.parametrize("layout", ["published_layout", "saved_layout"])
def test_a_sentence_transformers_clip_gives_the_clips_own_vectors(layout, request, tiny_clip, coco_mini):
    pictures = [Image.open(path).convert("RGB") for path in sorted((coco_mini / "images").glob("*.jpg"))[:3]]
    wrapped = _picture_vectors(request.getfixturevalue(layout), pictures)
    assert np.allclose(wrapped, _picture_vectors(tiny_clip, pictures), atol=1e-5)
    texts = VisualEmbedder(str(request.getfixturevalue(layout)), device="cpu").encode_texts(["a dog", "a cat"])
    assert np.allclose(texts, VisualEmbedder(str(tiny_clip), device="cpu").encode_texts(["a dog", "a cat"]), atol=1e-5)


def test_an_index_built_with_the_published_layout_finds_a_picture_by_itself(
    published_layout, coco_mini, embedder, tmp_path
):
    photos = photo_folder(coco_mini, tmp_path)
    with ImageSearch(
        embedder=embedder,
        captioner="captions",
        captions_file=str(photos.parent / "captions.jsonl"),
        visual_model=str(published_layout),
        device="cpu",
        data_dir=tmp_path / "data",
    ) as engine:
        assert engine.index([photos]).new == PHOTOS
        assert engine.status().visual_model == str(published_layout)
        picture = sorted(photos.glob("*.jpg"))[4]
        assert engine.query_image(picture, k=3)[0].path == str(picture)
        # A random text tower scores words against pictures below zero as often as above.
        assert len(engine.query("a photo", k=3, mode="visual", min_score=-1)) == 3


def test_a_cached_hub_id_in_the_published_layout_indexes_offline(published_layout, coco_mini, tmp_path):
    """As sentence-transformers/clip-ViT-B-32 lies in the cache after a download: no config at
    the top, the CLIP in its module folder. Offline, it counts as cached and loads from there."""
    from subprocess_helpers import imgsearch_env, run_imgsearch

    repo_id = "imgsearch-tests/st-clip"
    snapshot = tmp_path / "hf-home" / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    shutil.copytree(published_layout, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    photos = photo_folder(coco_mini, tmp_path / "set")
    env = imgsearch_env(tmp_path / "data", HF_HOME=str(tmp_path / "hf-home"))
    run_imgsearch(
        "index",
        photos,
        "--captioner",
        "captions",
        "--captions-file",
        photos.parent / "captions.jsonl",
        "--visual-model",
        repo_id,
        "--device",
        "cpu",
        env=env,
        check_code=0,
    )
    picture = sorted(photos.glob("*.jpg"))[2]
    found = run_imgsearch("query", "--image", picture, "-k", "3", "--json", env=env, check_code=0)
    assert json.loads(found.stdout)[0]["path"] == str(picture)
