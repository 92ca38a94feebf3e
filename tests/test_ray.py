"""Indexing on a Ray cluster (`--ray`): the same rows as a local run, every picture once after a
captioning actor dies, a killed driver resumed without captioning anything twice, pictures the
cluster cannot see refused, and a plain word on what to install when Ray is missing.

The cluster is a real one-node Ray started here on 127.0.0.1 (tests/ray_cluster.py), captioning
with a tiny random BLIP through the same code path as users, into the real Milvus server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from imgsearch import ImageSearch
from imgsearch.cli.options import with_bare_options_filled
from imgsearch.cluster.connection import ClusterShape, cluster_address
from imgsearch.cluster.pipeline import plan_pipeline
from imgsearch.config import Settings
from imgsearch.errors import ClusterError, ConfigError
from imgsearch.pictures.files import bytes_hash

from conftest import COCO_MINI, cached_caption_count, make_image
from ray_cluster import RayCluster, can_hide_folders, ray_installed
from subprocess_helpers import imgsearch_env, run_imgsearch, start_imgsearch

# Whole runs of the real command, a cluster or many kills: left out of the quick loop.
pytestmark = pytest.mark.slow

COCO_PICTURES = 159
needs_ray = pytest.mark.skipif(not ray_installed(), reason="ray not installed: pip install -e '.[ray]'")
# The test cluster's token. Ray reads the token and whether to send it once per process, when
# it is first used, so every test here (and every command it starts) has them from the start.
RAY_TOKEN = secrets.token_hex(16)


@pytest.fixture(autouse=True)
def ray_token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", RAY_TOKEN)


# --- Without a cluster: how --ray is read, and how the pipeline is laid out ---------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["photos", "--ray"], ["photos", "--ray=local"]),
        (["--ray", "photos"], ["--ray=local", "photos"]),
        (["--ray", "--uri", "http://m:19530", "photos"], ["--ray=local", "--uri", "http://m:19530", "photos"]),
        (["--ray", "auto", "photos"], ["--ray", "auto", "photos"]),
        (["photos", "--ray", "10.0.0.5:6379"], ["photos", "--ray", "10.0.0.5:6379"]),
        (["photos", "--ray", "ray://head:10001"], ["photos", "--ray", "ray://head:10001"]),
        (["--", "--ray"], ["--", "--ray"]),
    ],
)
def test_ray_option_may_be_given_without_an_address(args, expected):
    assert with_bare_options_filled(args, {"--ray": "local"}) == expected


def test_ray_setting_values():
    assert [cluster_address(v) for v in (None, False, "", "off", "0")] == [None] * 5
    assert [cluster_address(v) for v in (True, "true", "1", "local", "LOCAL")] == ["local"] * 5
    assert cluster_address("auto") == "auto"
    assert cluster_address("ray://head:10001") == "ray://head:10001"
    with pytest.raises(ConfigError, match="not a Ray address"):
        cluster_address("/shared/photos")


def test_one_captioning_actor_per_gpu_up_to_concurrency():
    settings = Settings(concurrency=4)
    on_gpus = plan_pipeline(ClusterShape(cpus=64, gpus=8, node_ids=("a",)), settings, 16, 384, wants_gpu=True)
    assert (on_gpus.captioning_actors, on_gpus.gpus_per_captioner, on_gpus.batch_size) == (4, 1.0, 16)
    few_gpus = plan_pipeline(ClusterShape(cpus=64, gpus=2, node_ids=("a",)), settings, 16, 384, wants_gpu=True)
    assert few_gpus.captioning_actors == 2
    # A captioner that needs no GPU (an API, captions files) shares the CPUs instead.
    on_cpus = plan_pipeline(ClusterShape(cpus=64, gpus=8, node_ids=("a",)), settings, 16, 384, wants_gpu=False)
    assert (on_cpus.captioning_actors, on_cpus.gpus_per_captioner, on_cpus.cpus_per_captioner) == (4, 0.0, 15.0)
    # Two CPUs hold one captioner, one embedder and a decode task at once.
    tiny = plan_pipeline(ClusterShape(cpus=2, gpus=0, node_ids=("a",)), settings, 8, 384, wants_gpu=True)
    assert tiny.captioning_actors == 1
    assert tiny.cpus_per_captioner + 0.5 + 0.5 <= 2
    # Blocks hold a few batches, and never more decoded pixels than the cap.
    huge = plan_pipeline(ClusterShape(cpus=8, gpus=1, node_ids=("a",)), settings, 4, 2048, wants_gpu=True)
    assert huge.block_rows * 2048 * 2048 * 3 <= 64 << 20 or huge.block_rows == huge.batch_size


def test_without_ray_installed_says_what_to_install(captioned_folder, tmp_path):
    """A Python where `import ray` fails stands for a machine without the extra."""
    blocked = tmp_path / "no_ray"
    blocked.mkdir()
    (blocked / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # import ray now fails\n")
    env = imgsearch_env(tmp_path / "data", pythonpath=[blocked])
    done = run_imgsearch("index", captioned_folder, "--captioner", "captions", "--ray", env=env, timeout=120)
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: indexing on a Ray cluster (--ray) needs Ray Data: pip install 'imgsearch-vlm[ray]' (in a clone: pip install -e '.[ray]')"
    ], done.stderr
    assert "Traceback" not in done.stderr


@needs_ray
def test_an_address_nobody_answers_at_is_refused_at_once(captioned_folder, tmp_path):
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    started = time.monotonic()
    with (
        ImageSearch(captioner="captions", data_dir=tmp_path / "data") as engine,
        pytest.raises(ClusterError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused"),
    ):
        engine.index([captioned_folder], ray=f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30  # Ray itself would retry for minutes


# --- On a real one-node cluster --------------------------------------------------------------


@pytest.fixture(scope="module")
def hidden_folder(tmp_path_factory) -> Path | None:
    """A folder the cluster's processes see empty (None where this machine cannot arrange that)."""
    return tmp_path_factory.mktemp("hidden-from-ray") if can_hide_folders() else None


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, hidden_folder):
    if not ray_installed():
        pytest.skip("ray not installed: pip install -e '.[ray]'")
    cluster = RayCluster(tmp_path_factory.mktemp("ray-head"), hidden=hidden_folder, token=RAY_TOKEN).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def ray_address(ray_cluster) -> str:
    """The cluster's address; this process and the commands it starts join it with RAY_TOKEN."""
    assert ray_cluster.client_env["RAY_AUTH_TOKEN"] == os.environ["RAY_AUTH_TOKEN"]
    return ray_cluster.address


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The coco-mini photos, plus one truncated JPEG that no run can index."""
    folder = tmp_path_factory.mktemp("coco-ray") / "photos"
    shutil.copytree(COCO_MINI / "images", folder)
    whole = (COCO_MINI / "images" / min(os.listdir(COCO_MINI / "images"))).read_bytes()
    (folder / "zz_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return folder


def tiny_engine(model_dir: Path, data_dir: Path, uri: str, collection: str, **settings) -> ImageSearch:
    return ImageSearch(
        captioner="transformers",
        caption_model=str(model_dir),
        device="cpu",
        data_dir=data_dir,
        milvus_uri=uri,
        collection=collection,
        **settings,
    )


def stored_rows(engine: ImageSearch) -> dict[str, tuple[str, list[float]]]:
    engine.store.load()
    rows = list(engine.store.iter_rows(["path", "caption", "vector"]))
    assert len({row["id"] for row in rows}) == len(rows), "a picture has two rows"
    return {row["path"]: (row["caption"], row["vector"]) for row in rows}


class CaptionCounter:
    """A progress display that counts the captions that came back, and can act on the first ones."""

    def __init__(self, on_first_captions=None):
        self.captioned = 0
        self.on_first_captions = on_first_captions

    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def failed(self, failure) -> None:
        pass

    def stage(self, name: str, *, total: int | None = None, total_less: int = 0, done: int = 0) -> None:
        if name == "captioning" and done:
            self.captioned += done
            if self.on_first_captions is not None:
                act, self.on_first_captions = self.on_first_captions, None
                act(self.captioned)


@needs_ray
@pytest.mark.slow
@pytest.mark.server
def test_cluster_gives_the_rows_of_a_local_run(ray_address, milvus_server, tiny_blip_dir, photos, tmp_path):
    with tiny_engine(tiny_blip_dir, tmp_path / "local", milvus_server.uri, "ray_local") as local:
        local_report = local.index([photos])
        local_rows = stored_rows(local)
    with tiny_engine(tiny_blip_dir, tmp_path / "cluster", milvus_server.uri, "ray_cluster", ray=ray_address) as on_ray:
        report = on_ray.index([photos])
        rows = stored_rows(on_ray)
        assert (report.new, report.captioned, report.captions_reused) == (
            local_report.new,
            local_report.captioned,
            local_report.captions_reused,
        )
        assert local_report.new == COCO_PICTURES
        # The broken picture fails in both, as truncated (found by the local run's first pass, which
        # checks the file is whole, or by the cluster's decode), and the run goes on past it.
        assert [f.path for f in report.failed] == [f.path for f in local_report.failed]
        assert [Path(f.path).name for f in report.failed] == ["zz_truncated.jpg"]
        assert all("truncated" in f.reason for f in [*report.failed, *local_report.failed])
        assert rows.keys() == local_rows.keys()
        for path, (caption, vector) in rows.items():
            assert caption == local_rows[path][0], path
            np.testing.assert_allclose(vector, local_rows[path][1], atol=1e-5, err_msg=path)
        # Unchanged pictures are never sent out again.
        again = on_ray.index([photos])
        assert (again.unchanged, again.captioned) == (COCO_PICTURES, 0)


@needs_ray
@pytest.mark.slow
@pytest.mark.server
def test_a_lost_captioning_actor_is_replaced_and_every_picture_indexed_once(
    ray_cluster, ray_address, milvus_server, tiny_blip_dir, photos, tmp_path
):
    killed: list[tuple[int, int]] = []

    def kill_a_captioner(captions_back: int) -> None:
        pids = ray_cluster.pids_running("CaptioningWorker")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer or a lost node would
            killed.append((pid, captions_back))

    progress = CaptionCounter(on_first_captions=kill_a_captioner)
    with tiny_engine(tiny_blip_dir, tmp_path / "data", milvus_server.uri, "ray_actor_lost", ray=ray_address) as engine:
        report = engine.index([photos], progress)
        assert killed, "no captioning actor was found to kill"
        assert killed[0][1] < COCO_PICTURES, "the run had finished before the actor was killed"
        assert (report.new, report.captioned, len(report.failed)) == (COCO_PICTURES, COCO_PICTURES, 1)
        assert len(stored_rows(engine)) == COCO_PICTURES
        # A replacement actor finished the work.
        assert not set(ray_cluster.pids_running("CaptioningWorker")) & {pid for pid, _ in killed}
    # The same pictures into a fresh collection: every caption comes from the cache, none goes out.
    with tiny_engine(
        tiny_blip_dir, tmp_path / "data", milvus_server.uri, "ray_actor_lost_again", ray=ray_address
    ) as engine:
        again = engine.index([photos])
    assert (again.new, again.captioned, again.captions_reused) == (COCO_PICTURES, 0, COCO_PICTURES)


@needs_ray
@pytest.mark.slow
def test_a_stopped_run_stops_the_work_on_the_cluster(ray_cluster, ray_address, tiny_blip_dir, photos, tmp_path):
    stop = threading.Event()
    progress = CaptionCounter(on_first_captions=lambda captions_back: stop.set())
    # Milvus Lite this time: the driver's store is whatever the run would use anyway.
    with tiny_engine(tiny_blip_dir, tmp_path / "data", str(tmp_path / "index.db"), "images", ray=ray_address) as engine:
        report = engine.index([photos], progress, stop=stop)
        assert report.interrupted
        assert 0 < report.captioned < COCO_PICTURES
        assert report.new == report.captioned  # every caption that came back got its row
        # Closing the results stopped the pipeline: its actors go while this driver stays connected.
        deadline = time.monotonic() + 30
        while ray_cluster.pids_running("CaptioningWorker") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not ray_cluster.pids_running("CaptioningWorker")


@needs_ray
@pytest.mark.slow
@pytest.mark.server
def test_a_killed_driver_resumes_without_captioning_twice(ray_address, milvus_server, tiny_blip_dir, photos, tmp_path):
    from imgsearch.cache.captions import CaptionCache

    data_dir = tmp_path / "data"
    env = imgsearch_env(data_dir)
    command = [
        "index",
        photos,
        "--ray",
        ray_address,
        "--uri",
        milvus_server.uri,
        "--collection",
        "ray_driver_killed",
        "--caption-model",
        tiny_blip_dir,
        "--device",
        "cpu",
        "--json",
    ]
    driver = start_imgsearch(*command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cache_file = data_dir / "captions.sqlite"
    deadline = time.monotonic() + 240
    try:
        while cached_caption_count(cache_file, timeout=1) == 0:
            assert driver.poll() is None, f"the run ended before any caption was cached:\n{driver.stderr.read()}"
            assert time.monotonic() < deadline, "no caption was cached in time"
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        driver.stderr.close()
    cached = CaptionCache(cache_file)
    kept = cached.count()
    cached.close()
    assert 0 < kept < COCO_PICTURES, kept
    resumed = run_imgsearch(*command, env=env, timeout=300)
    assert resumed.returncode == 1, resumed.stderr  # 1: the truncated picture failed
    report = json.loads(resumed.stdout)
    # What was cached before the kill was not captioned again; the rest was, once.
    assert report["captioned"] == COCO_PICTURES - kept
    assert report["captions_reused"] + report["unchanged"] == kept
    assert report["new"] + report["unchanged"] == COCO_PICTURES


@needs_ray
@pytest.mark.slow
def test_a_folder_the_cluster_cannot_see_is_refused_in_one_line(ray_address, hidden_folder, tmp_path):
    if hidden_folder is None:
        pytest.skip("this machine cannot hide a folder from the cluster (needs unshare and mount)")
    for i in range(3):
        picture = make_image(hidden_folder / f"only_here_{i}.jpg", color=(30 * i, 90, 150))
        picture.with_suffix(".txt").write_text(f"a picture only the driver can see, number {i}")
    env = imgsearch_env(tmp_path / "data")
    done = run_imgsearch("index", hidden_folder, "--captioner", "captions", "--ray", ray_address, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "cannot read" in errors[0] and "only_here_0.jpg" in errors[0], errors[0]
    assert "same path" in errors[0]
    assert "Traceback" not in done.stderr


# --- Image vectors made on the cluster (--visual-model) ---------------------------------------

VISUAL_PHOTOS = 12


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def captioned_photos(tmp_path_factory) -> Path:
    """VISUAL_PHOTOS coco-mini photos in photos/, each named with its first human caption in the
    captions.jsonl beside that folder."""
    folder = tmp_path_factory.mktemp("coco-ray-visual") / "photos"
    folder.mkdir()
    records = [json.loads(line) for line in (COCO_MINI / "captions.jsonl").read_text().splitlines() if line.strip()]
    chosen = sorted(records, key=lambda record: record["image"])[:VISUAL_PHOTOS]
    for record in chosen:
        shutil.copy(COCO_MINI / "images" / record["image"], folder / record["image"])
    (folder.parent / "captions.jsonl").write_text(
        "".join(json.dumps({"image": r["image"], "caption": r["captions"][0]}) + "\n" for r in chosen)
    )
    return folder


def stored_image_vectors(engine: ImageSearch) -> dict[str, np.ndarray]:
    engine.store.load()
    return {row["path"]: np.array(row["visual"]) for row in engine.store.iter_rows(["path", "visual"])}


def cached_image_vectors(data_dir: Path, pictures: list[Path], model_dir: Path) -> dict[str, list[float]]:
    from imgsearch.cache.captions import CaptionCache

    cache = CaptionCache(data_dir / "captions.sqlite")
    try:
        return cache.image_vectors([bytes_hash(p.read_bytes()) for p in pictures], f"visual:{model_dir}")
    finally:
        cache.close()


@needs_ray
@pytest.mark.slow
def test_the_cluster_makes_the_image_vectors_a_local_run_makes(
    ray_address, tiny_clip_dir, captioned_photos, embedder, tmp_path
):
    captions = captioned_photos.parent / "captions.jsonl"
    pictures = sorted(captioned_photos.glob("*.jpg"))
    with ImageSearch(
        captioner="captions",
        captions_file=str(captions),
        visual_model=str(tiny_clip_dir),
        device="cpu",
        data_dir=tmp_path / "local",
        embedder=embedder,
    ) as local:
        assert local.index([captioned_photos]).new == VISUAL_PHOTOS
        local_vectors = stored_image_vectors(local)
    data_dir = tmp_path / "cluster"
    env = imgsearch_env(data_dir)
    indexed = run_imgsearch(
        "index",
        captioned_photos,
        "--captioner",
        "captions",
        "--captions-file",
        captions,
        "--visual-model",
        tiny_clip_dir,
        "--device",
        "cpu",
        "--ray",
        ray_address,
        "--json",
        env=env,
        timeout=300,
    )
    assert indexed.returncode == 0, indexed.stderr
    assert "logging.cc" not in indexed.stderr  # Ray's notice of its log level stays off the console
    report = json.loads(indexed.stdout)
    assert (report["new"], report["captioned"], report["failed"]) == (VISUAL_PHOTOS, VISUAL_PHOTOS, [])
    found = run_imgsearch("query", "--image", pictures[5], "-k", "3", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["path"] == str(pictures[5])
    with ImageSearch(data_dir=data_dir) as on_ray:
        assert on_ray.status().visual_model == str(tiny_clip_dir)
        vectors = stored_image_vectors(on_ray)
    assert vectors.keys() == local_vectors.keys() == {str(p) for p in pictures}
    for path, vector in vectors.items():
        assert float(vector @ local_vectors[path]) > 0.999, path
    # Kept in the caption cache by content, as a local run keeps them.
    cached = cached_image_vectors(data_dir, pictures, tiny_clip_dir)
    assert len(cached) == VISUAL_PHOTOS
    for picture in pictures:
        assert np.allclose(cached[bytes_hash(picture.read_bytes())], vectors[str(picture)], atol=1e-6), picture


@needs_ray
@pytest.mark.slow
def test_a_rebuild_on_the_cluster_adds_image_vectors_and_captions_nothing(
    ray_address, tiny_clip_dir, captioned_photos, tmp_path
):
    pictures = sorted(captioned_photos.glob("*.jpg"))
    common = {
        "captioner": "captions",
        "captions_file": str(captioned_photos.parent / "captions.jsonl"),
        "device": "cpu",
        "data_dir": tmp_path / "data",
        "ray": ray_address,
    }
    with ImageSearch(**common) as engine:
        assert engine.index([captioned_photos]).captioned == VISUAL_PHOTOS
    assert cached_image_vectors(tmp_path / "data", pictures, tiny_clip_dir) == {}
    with ImageSearch(visual_model=str(tiny_clip_dir), **common) as engine:
        report = engine.index([captioned_photos], rebuild=True)
        # Every caption came from the cache; the cluster read the pictures for their image vectors.
        assert (report.new, report.captioned, report.captions_reused, report.failed) == (
            VISUAL_PHOTOS,
            0,
            VISUAL_PHOTOS,
            [],
        )
        vectors = stored_image_vectors(engine)
        assert len(cached_image_vectors(tmp_path / "data", pictures, tiny_clip_dir)) == VISUAL_PHOTOS
    # What the image–text model makes of each picture here, decoded as the local reader decodes it.
    from imgsearch.embedders.visual import VisualEmbedder
    from imgsearch.pictures.images import inspect_picture

    here = VisualEmbedder(str(tiny_clip_dir), device="cpu")
    decoded = [inspect_picture(p.read_bytes(), p, here.image_side)[1] for p in pictures]
    for picture, expected in zip(pictures, here.encode_images(decoded)):
        assert float(vectors[str(picture)] @ np.array(expected)) > 0.999, picture
