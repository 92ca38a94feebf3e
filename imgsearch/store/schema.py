"""The layout of an imgsearch collection: its fields, limits, indexes and the facts recorded about it."""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = "2"
# Facts about a collection, as properties() reports them.
PROP_EMBEDDER = "imgsearch.embedder"
PROP_DIMENSION = "imgsearch.dimension"
PROP_SCHEMA = "imgsearch.schema_version"
PROP_CAPTIONERS = "imgsearch.captioners"
PROP_KEYWORD_SEARCH = "imgsearch.keyword_search"
# An index with image vectors: the image–text model that made them, and their length.
PROP_VISUAL_MODEL = "imgsearch.visual_model"
PROP_VISUAL_DIMENSION = "imgsearch.visual_dimension"
# The field holding a picture's image vector, beside its caption's "vector".
VISUAL_FIELD = "visual"

MAX_PATH = 16384
MAX_CAPTION = 8192
MAX_CAPTIONER = 512
MAX_NAME = 1024
MAX_FOLDERS = 64
MAX_KEYWORDS = 16384
MAX_CAMERA = 256
# Lower-cased words minus the glue words every caption has, which only add noise to BM25.
STOP_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "at",
    "to",
    "with",
    "and",
    "or",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "there",
    "some",
    "for",
    "by",
    "from",
    "as",
    "into",
    "onto",
    "while",
    "his",
    "her",
    "their",
    "has",
    "have",
    "very",
]
# The English stemmer makes word forms one word ("giraffes" finds "giraffe", "runs" finds "running");
# queries go through the same analyzer. A collection keeps the analyzer it was made with: an index
# made before the stemmer matches exact forms until `imgsearch index FOLDER --rebuild`.
KEYWORD_ANALYZER = {
    "tokenizer": "standard",
    "filter": ["lowercase", {"type": "stop", "stop_words": STOP_WORDS}, {"type": "stemmer", "language": "english"}],
}
# Scalar fields returned with every hit and every row lookup.
ROW_FIELDS = [
    "path",
    "caption",
    "captioner",
    "content_hash",
    "size",
    "mtime",
    "width",
    "height",
    "indexed_at",
    "ocr_text",
    "file_name",
    "file_type",
    "taken_at",
    "camera",
]
# Fields a caller may leave out of a row.
ROW_DEFAULTS: dict[str, Any] = {
    "ocr_text": "",
    "file_name": "",
    "file_type": "",
    "folders": [],
    "taken_at": 0.0,
    "camera": "",
    "keywords": "",
}
_TEXT_LIMITS = (
    ("caption", MAX_CAPTION),
    ("captioner", MAX_CAPTIONER),
    ("path", MAX_PATH),
    ("ocr_text", MAX_CAPTION),
    ("file_name", MAX_NAME),
    ("camera", MAX_CAMERA),
    ("keywords", MAX_KEYWORDS),
)

# Milvus Lite 2.5.1 takes only FLAT, IVF_FLAT and AUTOINDEX, and ignores nlist and nprobe:
# below 100,000 rows every type searches exactly; from there on IVF_FLAT and AUTOINDEX use
# Milvus's own 100-list, 4-probe index, which missed 9% of the true ten nearest at 100k
# (benchmarks/query_latency.py). FLAT stays exact at any size, ~25 ms at 100k on 2 cores; inner
# product, which equals cosine on unit vectors, skips the per-row norms that cosine recomputes.
LITE_VECTOR_INDEX = {"index_type": "FLAT", "metric_type": "IP", "params": {}}
# No metric named: each collection is searched with its own (indexes made before FLAT use COSINE).
LITE_SEARCH_PARAMS: dict[str, Any] = {"params": {}}
# A server picks its own index for its hardware.
SERVER_VECTOR_INDEX = {"index_type": "AUTOINDEX", "metric_type": "COSINE"}


def build_schema(dimension: int, keyword_search: bool, description: str, visual_dimension: int = 0) -> Any:
    """The collection schema: one row per picture, keyed by its path's hash (with an image
    vector too when visual_dimension is set)."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    if visual_dimension:
        schema.add_field(VISUAL_FIELD, DataType.FLOAT_VECTOR, dim=visual_dimension)
    schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
    schema.add_field("caption", DataType.VARCHAR, max_length=MAX_CAPTION)
    schema.add_field("captioner", DataType.VARCHAR, max_length=MAX_CAPTIONER)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime", DataType.DOUBLE)
    schema.add_field("width", DataType.INT64)
    schema.add_field("height", DataType.INT64)
    schema.add_field("indexed_at", DataType.DOUBLE)
    schema.add_field("ocr_text", DataType.VARCHAR, max_length=MAX_CAPTION)
    schema.add_field("file_name", DataType.VARCHAR, max_length=MAX_NAME)
    schema.add_field("file_type", DataType.VARCHAR, max_length=16)
    # Every ancestor folder of the file, so "under this folder" is an exact match
    # (array_contains) rather than a LIKE pattern a user's path could widen.
    schema.add_field(
        "folders", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_FOLDERS, max_length=MAX_PATH
    )
    schema.add_field("taken_at", DataType.DOUBLE)
    schema.add_field("camera", DataType.VARCHAR, max_length=MAX_CAMERA)
    if keyword_search:
        schema.add_field(
            "keywords",
            DataType.VARCHAR,
            max_length=MAX_KEYWORDS,
            enable_analyzer=True,
            analyzer_params=KEYWORD_ANALYZER,
        )
        schema.add_field("keywords_bm25", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="keywords_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["keywords"],
                output_field_names=["keywords_bm25"],
            )
        )
    return schema


def build_index_params(client: Any, embedded: bool, keyword_search: bool, visual: bool = False) -> Any:
    index_params = client.prepare_index_params()
    # Embedders return unit vectors, so cosine and inner product give the same scores.
    for field in ("vector", VISUAL_FIELD) if visual else ("vector",):
        index_params.add_index(field, **(LITE_VECTOR_INDEX if embedded else SERVER_VECTOR_INDEX))
    if keyword_search:
        index_params.add_index("keywords_bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return index_params


def fit_row(row: dict[str, Any], keyword_search: bool = True, visual: bool = False) -> dict[str, Any]:
    """Trim text fields to the schema's limits (in UTF-8 bytes) so one long caption cannot fail a batch."""
    fitted = {**ROW_DEFAULTS, **row}
    if not keyword_search:
        fitted.pop("keywords", None)
    if not visual:
        fitted.pop(VISUAL_FIELD, None)
    fitted["folders"] = [folder for folder in fitted["folders"] if len(folder.encode("utf-8")) <= MAX_PATH]
    for name, limit in _TEXT_LIMITS:
        value = fitted.get(name)
        if isinstance(value, str) and len(value.encode("utf-8")) > limit:
            fitted[name] = value.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    return fitted
