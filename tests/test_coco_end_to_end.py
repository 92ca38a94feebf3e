"""Real photos, human captions: index coco-mini with caption 0, query with caption 1."""

import pytest

from imgsearch import ImageSearch


@pytest.mark.slow
def test_caption_one_finds_its_photo_in_top_five(embedder, coco_mini, coco_captions, tmp_path):
    with ImageSearch(
        captioner="captions",
        captions_file=str(coco_mini / "captions.jsonl"),
        data_dir=tmp_path / "data",
        embedder=embedder,
    ) as engine:
        report = engine.index([coco_mini / "images"])
        assert report.ok and report.new == len(coco_captions) == 159
        hits_at_5 = 0
        for name, captions in coco_captions.items():
            hits = engine.query(captions[1], k=5)
            assert len(hits) == 5
            hits_at_5 += any(hit.path.endswith("/" + name) for hit in hits)
        rate = hits_at_5 / len(coco_captions)
        print(f"coco-mini top-5 hit rate with caption 1 as query: {rate:.1%}")
        assert rate >= 0.90
        # A plain-words query lands on a photo whose human captions agree with it.
        best = engine.query("a giraffe standing near trees", k=1)[0]
        name = best.path.rsplit("/", 1)[1]
        assert any("giraffe" in c.lower() for c in coco_captions[name])
