"""Where to put the relevance floor: true matches kept, off-topic queries answered "no good match".

On coco-mini, human caption 0 of each photo is indexed as its caption (the eval's oracle
protocol, through the product's own index and query code); the queries are:

- the held-out human captions 1..4 (636 sentence queries, each with its one true photo);
- each photo's rarest caption-0 word (one-word queries, as `imgsearch eval` makes them);
- off-topic queries: things no photo shows (sentences and one or two words), and gibberish.

For each mode and floor the script reports the false-drop rate (the share of queries whose true
photo the floor would drop: caption cosine below it and, in hybrid, no query word in its keyword
text) and how many off-topic queries still keep a hit, the k best rows each query brings (k = 10,
as `imgsearch query` does by default). The chosen floors are relevance.CAPTION_FLOORS.

--captions-per-picture N indexes captions 0..N-1 joined as one description (as a VLM's paragraph
would be) and queries with the rest, as `imgsearch eval --captions-per-picture N` does.

Run: python benchmarks/relevance_floor.py [DATASET] [--captions-per-picture N] [--json]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import announce_cpu, cpu_line

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
# Things no coco-mini photo shows: as sentences (where hybrid searches meaning only) ...
OFF_TOPIC_SENTENCES = [
    "spaceship on mars",
    "astronaut floating in space",
    "coral reef with tropical fish",
    "a tax return form",
    "stock market chart on a screen",
    "medieval castle under siege",
    "northern lights over a glacier",
    "a submarine in the deep ocean",
    "quantum physics equations",
    "a volcano erupting lava at night",
    "dinosaur fossil in a museum",
    "a tiger hiding in the jungle",
    "penguins standing on an iceberg",
    "a violin concert in an orchestra hall",
    "a rattlesnake coiled in the sand",
    "a cathedral with stained windows",
    "fireworks exploding over the harbor",
    "a chess tournament",
    "bacteria under a microscope",
    "a spreadsheet of invoices",
    "a robot on an assembly line",
    "solar panels on a roof",
    "a camel in front of the pyramids",
    "a kangaroo in the outback",
    "an octopus in an aquarium",
    "jazz saxophone player in a club",
    "a satellite orbiting the earth",
    "a tornado over farmland",
]
# ... as one or two words (where hybrid also searches words) ...
OFF_TOPIC_WORDS = [
    "spaceship",
    "volcano",
    "dinosaur",
    "submarine",
    "quantum physics",
    "tax return",
    "penguins",
    "bitcoin",
    "saxophone",
    "octopus",
    "kangaroo",
    "tornado",
]
# ... and no words at all.
GIBBERISH = ["lorem ipsum dolor sit amet", "qwertyuiop", "asdf ghjk zxcv", "xq zv kkj"]
FLOORS = [round(0.20 + 0.01 * step, 2) for step in range(31)]  # 0.20 .. 0.50
MODES = ("dense", "hybrid")  # keyword mode has no floor: every hit it brings holds a query word
K = 10


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from imgsearch.config import Settings
    from imgsearch.engine import ImageSearch
    from imgsearch.evaluation import caption_queries, joined_description, load_dataset, rare_word_queries
    from imgsearch.search.plan import plan_query, run_plan
    from imgsearch.search.relevance import CAPTION_FLOORS, passes_floor

    arguments = sys.argv[1:]
    as_json = "--json" in arguments
    indexed = 1
    if "--captions-per-picture" in arguments:
        at = arguments.index("--captions-per-picture")
        indexed = int(arguments[at + 1])
        del arguments[at : at + 2]
    announce_cpu()
    given = [arg for arg in arguments if not arg.startswith("-")]
    dataset = Path(given[0]) if given else Path(os.environ.get("IMGSEARCH_COCO_MINI", DEFAULT_DATASET))
    images, captions = load_dataset(dataset)
    query_sets = {
        "held-out captions": [(q.text, q.answer) for q in caption_queries(captions, live=False, indexed=indexed)],
        "rare words": [(q.text, q.answer) for q in rare_word_queries(captions)],
        "off-topic sentences": [(text, None) for text in OFF_TOPIC_SENTENCES],
        "off-topic words": [(text, None) for text in OFF_TOPIC_WORDS],
        "gibberish": [(text, None) for text in GIBBERISH],
    }
    with tempfile.TemporaryDirectory(prefix="imgsearch-floor-") as scratch:
        captions_file = dataset / "captions.jsonl"
        if indexed > 1:
            captions_file = Path(scratch) / "captions.jsonl"
            captions_file.write_text(
                "".join(
                    json.dumps({"image": name, "captions": [joined_description(texts[:indexed])]}) + "\n"
                    for name, texts in captions.items()
                ),
                encoding="utf-8",
            )
        settings = Settings(
            data_dir=Path(scratch) / "data",
            collection="floor",
            captioner="captions",
            captions_file=str(captions_file),
            keep_loaded=0,
        )
        with ImageSearch(settings) as engine:
            engine.index([images])
            store = engine.store
            store.open(engine.embedder.id, lambda: engine.embedder.dimension, create=False)
            texts = sorted({text for queries in query_sets.values() for text, _ in queries})
            vectors = dict(zip(texts, engine.embedder.embed_queries(texts)))
            everything = store.count()
            # Per mode and query set: for true-answer queries the answer's row, else the k best rows.
            evidence: dict[str, dict[str, list]] = {mode: {} for mode in MODES}
            top_caption: dict[str, tuple[float, str]] = {}
            for mode in MODES:
                for name, queries in query_sets.items():
                    found = []
                    for text, answer in queries:
                        # Every row, so the answer's caption cosine is known wherever it ranks.
                        plan = plan_query(text, everything, mode, settings, store.keyword_search_enabled, store.uri)
                        rows = run_plan(store, plan, text, lambda t=text: vectors[t], everything, "")
                        if answer is None:
                            found.append(rows[:K])
                            if mode == "dense" and rows:
                                top_caption[text] = (rows[0]["score"], rows[0]["caption"])
                        else:
                            found.append(next((row for row in rows if Path(row["path"]).name == answer), None))
                    evidence[mode][name] = found
    report = {
        "cpu": cpu_line(),
        "dataset": str(dataset),
        "pictures": everything,
        "captions_indexed": indexed,
        "k": K,
        "modes": {},
    }
    for mode in MODES:
        table = []
        for floor in FLOORS:
            line = {"floor": floor}
            for name, found in evidence[mode].items():
                if name in ("held-out captions", "rare words"):
                    dropped = sum(row is None or not passes_floor(row, floor) for row in found)
                    line[name] = 100 * dropped / len(found)
                else:
                    line[name] = sum(any(passes_floor(row, floor) for row in rows) for rows in found)
            table.append(line)
        report["modes"][mode] = table
    report["chosen"] = {
        mode: next(line for line in report["modes"][mode] if line["floor"] == floor)
        for mode, floor in CAPTION_FLOORS.items()
    }
    report["off_topic_best"] = {
        text: {"cosine": score, "caption": caption} for text, (score, caption) in top_caption.items()
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _print(report, {name: len(queries) for name, queries in query_sets.items()})


def _print(report: dict, sizes: dict[str, int]) -> None:
    indexed = report["captions_indexed"]
    what = "caption 0" if indexed == 1 else f"captions 0-{indexed - 1} as one description"
    print(f"{report['dataset']}: {report['pictures']} pictures, {what} indexed; k = {report['k']}")
    names = list(sizes)
    for mode, table in report["modes"].items():
        print(f"\n{mode}: false drops (% of queries whose true photo falls below) | off-topic queries keeping a hit")
        print("floor  " + "  ".join(f"{name} ({sizes[name]})" for name in names))
        for line in table:
            cells = [
                f"{line[name]:.1f}%" if name in ("held-out captions", "rare words") else str(line[name])
                for name in names
            ]
            print(
                f"{line['floor']:.2f}   "
                + "  ".join(f"{cell:>{len(name) + len(str(sizes[name])) + 3}}" for cell, name in zip(cells, names))
            )
    print("\nchosen floors (relevance.CAPTION_FLOORS):")
    for mode, line in report["chosen"].items():
        parts = ", ".join(
            f"{name}: {line[name]:.1f}% dropped"
            if name in ("held-out captions", "rare words")
            else f"{name}: {line[name]}/{sizes[name]} keep a hit"
            for name in names
        )
        print(f"  {mode} {line['floor']:.2f}: {parts}")
    print("\noff-topic queries' best caption cosine (dense):")
    for text, best in sorted(report["off_topic_best"].items(), key=lambda item: -item[1]["cosine"]):
        print(f"  {best['cosine']:.3f}  {text!r} -> {best['caption']!r}")


if __name__ == "__main__":
    main()
