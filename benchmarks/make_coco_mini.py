"""Make a coco-mini set from COCO 2017: N photos with 5 human captions each, as `imgsearch eval` reads them.

Usage: python benchmarks/make_coco_mini.py --coco COCO_FOLDER [--out FOLDER] [--count 159] [--split val2017]

COCO_FOLDER holds what cocodataset.org gives out, unzipped: val2017/ (the "2017 Val images"
zip) and annotations/captions_val2017.json (in the "2017 Train/Val annotations" zip). The
default --out is ../shared/data/coco-mini beside the repository, where the benchmarks, the
notebook and the tests look (or set IMGSEARCH_COCO_MINI to the folder).

The photos are picked by their COCO id, spread evenly from the lowest to the highest among
those with at least 5 captions, so the same COCO files always give the same set. Written:
  images/NNNNNNNNNNNN.jpg  the photos, copied as COCO distributes them;
  captions.jsonl           one JSON object a line: {"image", "captions" (the first 5 by
                           annotation id), "coco_id", "split", "license", "flickr_url"};
  README.md                what the set is and where it came from.
The photos keep their Flickr authors' licences (named in each line's "license"); the caption
annotations are CC BY 4.0. Use the set for testing and evaluation; do not ship it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from demo_data import BESIDE_REPO

CAPTIONS_PER_PHOTO = 5
DOWNLOADS = "http://images.cocodataset.org/zips/val2017.zip and http://images.cocodataset.org/annotations/annotations_trainval2017.zip"


class SetError(Exception):
    """A one-line reason the set cannot be made, with what to do."""


def pick(annotations: dict, count: int) -> list[tuple[dict, list[str]]]:
    """count (image record, its first 5 captions) pairs, spread evenly over the eligible COCO ids."""
    captions: dict[int, list[tuple[int, str]]] = {}
    for note in annotations["annotations"]:
        captions.setdefault(int(note["image_id"]), []).append((int(note["id"]), " ".join(str(note["caption"]).split())))
    images = {int(image["id"]): image for image in annotations["images"]}
    eligible = sorted(i for i in images if len(captions.get(i, ())) >= CAPTIONS_PER_PHOTO)
    if len(eligible) < count:
        raise SetError(f"only {len(eligible)} images have {CAPTIONS_PER_PHOTO} captions, fewer than --count {count}")
    chosen = [eligible[n * len(eligible) // count] for n in range(count)]
    return [(images[i], [text for _, text in sorted(captions[i])[:CAPTIONS_PER_PHOTO]]) for i in chosen]


def make_set(coco: Path, out: Path, count: int, split: str) -> int:
    """Write the set into out (made whole beside it, then moved in place); returns the photos written."""
    annotations = _read_annotations(coco / "annotations" / f"captions_{split}.json")
    photos = coco / split
    if not photos.is_dir():
        raise SetError(f"{photos} is not a folder: unzip {split}.zip into {coco} ({DOWNLOADS})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SetError(f"{out} already exists and is not an empty folder: delete it, or choose another --out")
    licences = {int(entry["id"]): str(entry["name"]) for entry in annotations.get("licenses", [])}
    chosen = pick(annotations, count)
    missing = [photos / image["file_name"] for image, _ in chosen if not (photos / image["file_name"]).is_file()]
    if missing:
        raise SetError(
            f"{missing[0]} is missing ({len(missing)} of the chosen photos are): unzip {split}.zip again, completely"
        )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_set(partial, chosen, photos, licences, split)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a stopped run leaves no half-made set behind
        raise
    if out.exists():
        out.rmdir()  # empty, as checked above
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(out)
    return count


def _write_set(
    folder: Path, chosen: list[tuple[dict, list[str]]], photos: Path, licences: dict[int, str], split: str
) -> None:
    (folder / "images").mkdir(parents=True)
    lines = []
    for image, texts in chosen:
        shutil.copyfile(photos / image["file_name"], folder / "images" / image["file_name"])
        lines.append(
            json.dumps(
                {
                    "image": image["file_name"],
                    "captions": texts,
                    "coco_id": int(image["id"]),
                    "split": split,
                    "license": licences.get(int(image.get("license", -1)), "unknown"),
                    "flickr_url": image.get("flickr_url", ""),
                }
            )
        )
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_readme(len(chosen), split), encoding="utf-8")


def _read_annotations(path: Path) -> dict:
    if not path.is_file():
        raise SetError(f"{path} is missing: unzip annotations_trainval2017.zip into {path.parents[1]} ({DOWNLOADS})")
    try:
        annotations = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(annotations["images"], list) or not isinstance(annotations["annotations"], list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SetError(
            f"{path} is not a COCO caption annotation file (it needs 'images' and 'annotations' lists)"
        ) from None
    return annotations


def _readme(count: int, split: str) -> str:
    return (
        f"# coco-mini: {count} photos with human captions\n\n"
        f"Made by benchmarks/make_coco_mini.py from MS-COCO 2017 ({split}): {count} photographs, each with\n"
        f"{CAPTIONS_PER_PHOTO} human-written COCO captions.\n\n"
        "- `images/NNNNNNNNNNNN.jpg` — the photos, as COCO distributes them.\n"
        "- `captions.jsonl` — one JSON object a line: `image`, `captions`, `coco_id`, `split`, `license`, `flickr_url`.\n\n"
        "Licences: each photo keeps its Flickr Creative Commons licence, named in its `license` field.\n"
        "The COCO caption annotations are CC BY 4.0. Use the set for testing and evaluation only; do\n"
        "not copy the photos into a project repository or ship them in a package.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--coco", type=Path, required=True, help="folder with val2017/ and annotations/ from cocodataset.org"
    )
    parser.add_argument("--out", type=Path, default=BESIDE_REPO, help=f"where the set goes (default: {BESIDE_REPO})")
    parser.add_argument("--count", type=int, default=159, help="photos in the set")
    parser.add_argument("--split", default="val2017", help="the COCO split to take photos from")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    try:
        written = make_set(args.coco.expanduser(), args.out.expanduser().absolute(), args.count, args.split)
    except SetError as problem:
        print(f"make_coco_mini: {problem}", file=sys.stderr)
        return 1
    except OSError as problem:  # a full disk, an unreadable photo: nothing was left half-made
        print(f"make_coco_mini: cannot write the set to {args.out}: {problem}", file=sys.stderr)
        return 1
    print(f"wrote {written} photos and captions.jsonl to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
