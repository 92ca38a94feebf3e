"""The commands that search: `query` the index, and `eval` to measure search quality on a dataset."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# string annotations would be evaluated anew each time (about 25 ms of start-up for all commands).

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .application import EXIT_USAGE, err, fail, out
from .hit_lines import print_hits
from .option_groups import Options, with_options
from .options import CAPTIONER, CONFIG, EMBEDDER, FILTERS, STORE, JsonOut, settings_from

if TYPE_CHECKING:
    from ..evaluation import EvalReport
    from ..search.plan import SearchFilters


@with_options(FILTERS, EMBEDDER, STORE, CONFIG)
def query(
    text: Annotated[str | None, typer.Argument(help="What to look for, in plain words.", show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", "--top", help="How many results.", min=1, max=1000)] = 10,
    mode: Annotated[
        str | None,
        typer.Option(
            help="dense (meaning), keyword (words, file and folder names), hybrid (default), or visual (image vectors only)."
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Drop results scoring below this (default: the search mode's relevance floor; 0 keeps every result); none left means no good match."
        ),
    ] = None,
    like: Annotated[
        Path | None,
        typer.Option(
            help="More like this: pictures closest to this indexed picture (its image vector where the index has them, else its caption)."
        ),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            help="Search by picture: any picture file, indexed or not (needs an index built with --visual-model)."
        ),
    ] = None,
    sort: Annotated[
        str, typer.Option(help="score (best match first) or date (the same results, newest taken first).")
    ] = "score",
    *,
    options: Options,
    filters: Options,
    as_json: JsonOut = False,
) -> None:
    """Show the pictures that best match TEXT (or are most like --like PATH or --image FILE), best first
    (newest first with --sort date)."""
    if sum(given is not None for given in (text, like, image)) != 1:
        fail("give either TEXT to search for, --like PATH or --image FILE", EXIT_USAGE)
    from ..search.plan import SearchFilters, check_sort
    from ..serving.kept_index import search

    check_sort(sort)
    given = dict(filters)
    file_types = tuple(given.pop("file_type") or ())
    conditions = SearchFilters(**given, file_types=file_types)
    settings = settings_from(options)
    # Answered by the process keeping an embedded index loaded where one can, else searched here;
    # either way filtered, floored and ordered by the engine.
    request = {
        "text": text,
        "like": str(like) if like is not None else None,
        "image": str(image.expanduser().absolute()) if image is not None else None,
        "k": k,
        "mode": mode,
        "min_score": min_score,
        "filters": dataclasses.asdict(conditions),
        "sort": sort,
    }
    hits = search(settings, request)
    facts = hits.floor_facts()
    if as_json:
        out.print_json(json.dumps([hit.to_dict() for hit in hits]))
        # The list stays a list for scripts; that it is empty for want of a good match goes to stderr.
        if facts["no_good_match"]:
            err.print(escape(_no_good_match(text, like, image, facts)))
        return
    if not hits:
        err.print(escape(_no_good_match(text, like, image, facts)) if facts["no_good_match"] else _no_match(conditions))
        return
    print_hits(hits, with_dates=sort == "date")


def _no_good_match(text: str | None, like: Path | None, image: Path | None, facts: dict[str, Any]) -> str:
    """'no good match for ...; N pictures scored below the floor F (--min-score 0 shows them)'."""
    from ..search.relevance import no_good_match_line

    what = repr(text) if text is not None else f"pictures like {like or image}"
    return no_good_match_line(what, facts["below_floor"], facts["floor"], "--min-score 0")


def _no_match(filters: "SearchFilters") -> str:
    # Nothing fell below a score floor: the search's k best of whatever passes the filters were
    # none, so nothing passed them (or nothing is indexed).
    if filters.expression():
        return "no match: no indexed picture passes the filters"
    return "no match: nothing in the index matches this query"


@with_options(EMBEDDER, STORE, CONFIG)
def duplicates(
    folder: Annotated[Path | None, typer.Argument(help="Only pictures under this folder.", show_default=False)] = None,
    threshold: Annotated[
        float,
        typer.Option(help="How alike two image vectors must be (cosine) to count as one picture.", min=0.0, max=1.0),
    ] = 0.95,
    *,
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """List pictures indexed twice: the same bytes, and near-copies (resized, recompressed, edited)
    where the index has image vectors. Nothing is deleted."""
    from ..engine import ImageSearch

    settings = settings_from(options)
    with ImageSearch(settings) as engine:
        groups = engine.duplicates(threshold, folder)
        by_vectors = bool(engine.store.visual_model)
    if as_json:
        out.print_json(json.dumps(groups))
        return
    if not by_vectors:
        err.print(
            "the index has no image vectors: only copies with the same bytes are found (index with --visual-model for near-copies)"
        )
    if not groups:
        err.print("no duplicates found")
        return
    for number, group in enumerate(groups, 1):
        out.print(f"[bold]{number}.[/] {len(group)} pictures")
        for path in group:
            out.print(f"   {escape(path)}")


# The dataset's index is a throw-away one, so no store options.
@with_options(CAPTIONER.only("captioner", "caption_model"), EMBEDDER, CONFIG)
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="A folder with images/ and captions.jsonl.", show_default=False)],
    live: Annotated[
        bool, typer.Option("--live", help="Caption with the configured captioner instead of indexing human caption 0.")
    ] = False,
    modes: Annotated[
        list[str] | None,
        typer.Option("--mode", help="Search modes to compare (repeat) (default: all, visual too with --visual-model)."),
    ] = None,
    captions_per_picture: Annotated[
        int,
        typer.Option(
            "--captions-per-picture",
            min=1,
            help="Index N human captions per picture joined as one description and query with the rest; "
            "N > 1 is reported beside the one-caption protocol.",
        ),
    ] = 1,
    *,
    options: Options,
    as_json: JsonOut = False,
) -> None:
    """Measure search quality on a captioned dataset (Recall@1/5/10, MRR, nDCG@10, latency).

    The index is built in a throw-away folder; your own index is never touched.
    """
    from ..evaluation import run_eval
    from ..search.plan import check_mode

    settings = settings_from(options)
    # None: every mode the dataset's index answers (visual where it has image vectors).
    chosen = [check_mode(m) for m in modes] if modes else None
    with err.status("evaluating…") as spinner:
        report = run_eval(
            dataset,
            settings,
            live=live,
            modes=chosen,
            progress=lambda text: spinner.update(text),
            captions_per_picture=captions_per_picture,
        )
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    _print_eval(report, dataset, live)


def _print_eval(report: "EvalReport", dataset: Path, live: bool) -> None:
    from rich.table import Table

    table = Table(title=f"{dataset} ({'live' if live else 'oracle'} mode, {report.images} images)")
    table.add_column("indexed")
    for column in ("queries", "mode", "n", "R@1", "R@5", "R@10", "MRR", "nDCG@10", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column in ("queries", "mode") else "right")
    for row in report.scores:
        table.add_row(
            row.protocol,
            row.query_set,
            row.mode,
            str(row.queries),
            *(f"{row.recall[c]:.1f}" for c in (1, 5, 10)),
            f"{row.mrr:.3f}",
            f"{row.ndcg10:.3f}",
            f"{row.latency_p50_ms:.1f}",
            f"{row.latency_p95_ms:.1f}",
        )
    out.print(table)
