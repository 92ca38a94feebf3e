"""Long text embedded so every sentence counts: which vector(s) for a description of several sentences?

On coco-mini, for each rotation r in 0..4 a photo's description is its other four human captions
joined as sentences and the query is caption r. Three ways to embed the description, compared
exactly with numpy (cosine, every photo ranked):

- whole text: one vector of the joined paragraph (what imgsearch did before);
- sentence mean: the normalised mean of its sentences' vectors (what imgsearch ships);
- max-sim: one vector per sentence, a photo scored by its best sentence. One Milvus row per
  sentence searched with group_by_field on the photo ranks the same way, so it is not run
  separately (--milvus checks that it does, where Milvus Lite supports grouping search).

Queries are always one vector of the whole query. Run: python benchmarks/long_captions.py [DATASET]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import announce_cpu

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"


def as_sentence(caption: str) -> str:
    caption = caption.strip()
    return caption if caption.endswith((".", "!", "?")) else caption + "."


def scores(ranks: np.ndarray) -> dict[str, float]:
    return {
        "R@1": 100 * float(np.mean(ranks <= 1)),
        "R@5": 100 * float(np.mean(ranks <= 5)),
        "MRR": float(np.mean(1 / ranks)),
    }


def answer_ranks(similarity: np.ndarray) -> np.ndarray:
    """1-based rank of the right photo (the diagonal) in each query's row."""
    right = np.diag(similarity)[:, None]
    return 1 + (similarity > right).sum(axis=1)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from imgsearch.embedders.sentence_transformer import SentenceTransformerEmbedder
    from imgsearch.embedders.sentences import split_sentences

    announce_cpu()
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else DEFAULT_DATASET
    records = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines() if line.strip()]
    captions = [r["captions"][:5] for r in records if len(r["captions"]) >= 5]
    embedder = SentenceTransformerEmbedder()
    whole = lambda texts: np.asarray(embedder.embed_queries(texts))  # noqa: E731  one vector per text
    results: dict[str, list[dict[str, float]]] = {"whole text": [], "sentence mean": [], "max-sim": []}
    split_right = 0
    for r in range(5):
        descriptions = [" ".join(as_sentence(c) for i, c in enumerate(caps) if i != r) for caps in captions]
        queries = whole([caps[r] for caps in captions])
        sentences = [split_sentences(text) for text in descriptions]
        split_right += sum(len(s) == 4 for s in sentences)
        flat = whole([s for group in sentences for s in group])
        owner = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])
        per_sentence = queries @ flat.T  # queries x sentences
        max_sim = np.full((len(queries), len(sentences)), -np.inf)
        np.maximum.at(max_sim.T, owner, per_sentence.T)
        means = np.zeros((len(sentences), flat.shape[1]))
        np.add.at(means, owner, flat)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        results["whole text"].append(scores(answer_ranks(queries @ whole(descriptions).T)))
        results["sentence mean"].append(scores(answer_ranks(queries @ means.T)))
        results["max-sim"].append(scores(answer_ranks(max_sim)))
        if r == 0 and "--milvus" in sys.argv:
            print(milvus_grouping_check(flat, owner, queries, answer_ranks(max_sim)))
    print(
        f"{len(captions)} photos, 5 rotations; the splitter found 4 sentences in {split_right} of {5 * len(captions)} descriptions"
    )
    print(f"{'description vector':<16} {'R@1':>6} {'R@5':>6} {'MRR':>6}")
    for name, runs in results.items():
        mean = {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}
        print(f"{name:<18} {mean['R@1']:6.1f} {mean['R@5']:6.1f} {mean['MRR']:6.3f}")


def milvus_grouping_check(flat: np.ndarray, owner: np.ndarray, queries: np.ndarray, exact: np.ndarray) -> str:
    """One row per sentence in Milvus Lite, searched with group_by_field: same ranks as max-sim?"""
    import tempfile

    from pymilvus import DataType, MilvusClient

    with tempfile.TemporaryDirectory() as scratch:
        client = MilvusClient(str(Path(scratch) / "g.db"))
        schema = client.create_schema(auto_id=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("photo", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=flat.shape[1])
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="COSINE")
        client.create_collection("s", schema=schema, index_params=index)
        client.insert("s", [{"photo": int(o), "vector": v.tolist()} for o, v in zip(owner, flat)])
        try:
            hits = client.search(
                "s", queries.tolist(), limit=len(exact), group_by_field="photo", output_fields=["photo"]
            )
        except Exception as error:  # noqa: BLE001  an unsupported grouping search is the finding
            return f"Milvus Lite grouping search: not supported here ({type(error).__name__}: {str(error)[:120]})"
        ranks = []
        for number, found in enumerate(hits):
            photos = [hit["entity"]["photo"] for hit in found]
            ranks.append(photos.index(number) + 1 if number in photos else len(exact) + 1)
        agree = int(np.sum(np.asarray(ranks) == exact))
        return f"Milvus Lite grouping search (rotation 0): {agree} of {len(exact)} answer ranks equal max-sim's"


if __name__ == "__main__":
    main()
