"""The library (every picture newest first, a page at a time) through the engine, GET /api/pictures on a
real server and the page in Chromium; the page's layout on a phone and a desktop, dates on cards and in
the viewer, and the placeholder of a picture whose file is gone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imgsearch.errors import ConfigError
from imgsearch.search.library import picture_date

from dated_pictures import CAR_FILE_TIME, NEWEST_FIRST, QUERY, dated_folder
from served_visual import serving
from test_caption_pending import store_pending_row
from test_web_page import chromium  # noqa: F401 (a fixture)

# Older than every dated picture, one a day from 1 January 2005: enough for a second page of 60.
OLD_PICTURES = 60
OLD_START = datetime(2005, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()
# Stored by an index run's first pass (no caption yet), dated by its file: between two dated pictures.
PENDING_NAME = "harbour/kayak_0042.jpg"
PENDING_TIME = datetime(2022, 5, 1, 10, 0, tzinfo=timezone.utc).timestamp()
# Indexed, then deleted from the disk: still in the index, its file missing.
GONE = "cat-sofa.jpg"
NEWEST = [NEWEST_FIRST[0], "kayak_0042.jpg", *NEWEST_FIRST[1:]]
OLD_NAMES = [f"old-{number:02d}.jpg" for number in reversed(range(OLD_PICTURES))]
EVERY = [*NEWEST, *OLD_NAMES]
MISSING_TEXT = "File missing"
PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1280, "height": 900}


@dataclass
class Library:
    engine: Any
    folder: Path
    pending: Path


@pytest.fixture(scope="module")
def library(embedder, tmp_path_factory) -> Iterator[Library]:
    """The five dated pictures, sixty older ones dated by their files, one waiting for its caption,
    and one deleted after it was indexed."""
    from imgsearch import ImageSearch
    from imgsearch.serving.jobs import SerializedEmbedder

    base = tmp_path_factory.mktemp("library")
    folder = dated_folder(base)
    for number in range(OLD_PICTURES):
        path = folder / f"old-{number:02d}.jpg"
        Image.new("RGB", (48, 36), (number * 4, 200 - number * 3, 90)).save(path)
        path.with_suffix(".txt").write_text(f"An old photo of a quiet street, number {number}.", encoding="utf-8")
        moment = OLD_START + number * 86400
        os.utime(path, (moment, moment))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(base / "config"))
        env.setenv("HF_HUB_OFFLINE", "1")
        engine = ImageSearch(
            embedder=SerializedEmbedder(embedder),
            captioner="captions",
            data_dir=base / "data",
            device="cpu",
            keep_loaded=0,
        )
    report = engine.index([folder])
    assert report.ok and report.new == 5 + OLD_PICTURES, report
    pending = folder / PENDING_NAME
    pending.parent.mkdir()
    Image.new("RGB", (48, 36), (10, 120, 60)).save(pending)
    os.utime(pending, (PENDING_TIME, PENDING_TIME))
    store_pending_row(engine, pending, like=folder / "dog-park.jpg")
    (folder / GONE).unlink()
    yield Library(engine, folder, pending)
    engine.close()


def _names(pictures) -> list[str]:
    return [Path(picture["path"] if isinstance(picture, dict) else picture.path).name for picture in pictures]


# -- the engine --------------------------------------------------------------------------------------


def test_browse_pages_through_every_picture_newest_first(library):
    first = library.engine.browse(4)
    assert _names(first.pictures) == EVERY[:4]
    assert first.total == len(EVERY) and first.next_before
    seen, before = [], None
    while True:
        page = library.engine.browse(25, before=before)
        seen += _names(page.pictures)
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == EVERY  # no picture twice, none left out, the pending and the missing ones too


def test_browse_dates_their_source_and_the_pending_caption(library):
    by_name = {Path(p.path).name: p for p in library.engine.browse(10).pictures}
    puppy = by_name["puppy-grass.jpg"]
    assert puppy.date_source == "taken" and puppy.date == datetime(2023, 8, 20, 9, 15, tzinfo=timezone.utc).timestamp()
    car = by_name["car-street.jpg"]
    assert car.date_source == "file" and car.date == CAR_FILE_TIME
    kayak = by_name["kayak_0042.jpg"]
    assert kayak.caption_pending and kayak.caption == "" and kayak.date == PENDING_TIME
    assert not puppy.caption_pending and puppy.caption.startswith("A small puppy")
    assert picture_date({"taken_at": 0.0, "mtime": 0.0}) == (None, "")
    assert picture_date({"taken_at": 0.0, "mtime": 5.0}) == (5.0, "file")


def test_browse_from_a_date_and_bad_arguments(library):
    # The pictures taken before 2020: the cat, the dog and the snow, then the old ones.
    assert _names(library.engine.browse(3, before="2020-01-01").pictures) == [
        "cat-sofa.jpg",
        "dog-park.jpg",
        "snowy-peaks.jpg",
    ]
    assert _names(library.engine.browse(2, before=datetime(2005, 1, 3, tzinfo=timezone.utc)).pictures) == [
        "old-01.jpg",
        "old-00.jpg",
    ]
    assert library.engine.browse(5, before="1990-01-01").pictures == []
    for limit in (0, 501, True):
        with pytest.raises(ConfigError, match="limit"):
            library.engine.browse(limit)
    for before in ("last tuesday", "nan~abc", "inf~abc"):
        with pytest.raises(ConfigError, match="before"):
            library.engine.browse(5, before=before)


# -- GET /api/pictures ---------------------------------------------------------------------------------


def test_api_pictures_pages_newest_first(library):
    with serving(library.engine, [library.folder]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.get("/api/pictures", params={"limit": 3})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["total"] == len(EVERY) and page["limit"] == 3
        assert _names(page["pictures"]) == EVERY[:3]
        puppy, kayak, car = page["pictures"]
        assert (puppy["date_source"], kayak["date_source"], car["date_source"]) == ("taken", "file", "file")
        assert car["date"] == CAR_FILE_TIME == car["metadata"]["mtime"]
        assert kayak["caption_pending"] is True and kayak["caption"] == ""
        assert puppy["caption_pending"] is False and puppy["thumbnail"] == f"/api/images/{puppy['id']}/thumbnail"
        assert (puppy["servable"], puppy["missing"]) == (True, False)
        assert [part["text"] for part in puppy["captions"]] == [puppy["caption"]]
        # The links work: the record, and the thumbnail of a picture whose file is there.
        assert client.get(puppy["record"]).json()["path"] == puppy["path"]
        assert client.get(puppy["thumbnail"]).headers["content-type"] == "image/jpeg"

        seen, before = [], None
        while True:
            params = {"limit": 50, **({"before": before} if before else {})}
            page = client.get("/api/pictures", params=params).json()
            seen += _names(page["pictures"])
            before = page["next_before"]
            if before is None:
                break
        assert seen == EVERY

        from_2020 = client.get("/api/pictures", params={"limit": 2, "before": "2020-01-01"}).json()
        assert _names(from_2020["pictures"]) == ["cat-sofa.jpg", "dog-park.jpg"]
        # The deleted picture is listed (it is in the index); its record says its file cannot be served.
        gone = from_2020["pictures"][0]
        assert (gone["servable"], gone["missing"]) == (False, True)
        record = client.get(gone["record"]).json()
        assert (record["servable"], record["missing"]) == (False, True)
        assert client.get(gone["thumbnail"]).status_code == 404

        for params in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"before": "soon"}, {"before": "x" * 201}):
            refused = client.get("/api/pictures", params=params)
            assert refused.status_code in (400, 422), (params, refused.text)
            assert "Traceback" not in refused.text and "error" in refused.json()


def test_api_pictures_tells_a_file_not_served_from_a_missing_one(library):
    """Served only the harbour folder, the other pictures are there but not served: not missing."""
    with (
        serving(library.engine, [library.pending.parent]) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        puppy, kayak = client.get("/api/pictures", params={"limit": 2}).json()["pictures"]
        assert (puppy["servable"], puppy["missing"]) == (False, False)
        assert (kayak["servable"], kayak["missing"]) == (True, False)
        assert client.get(puppy["record"]).json()["missing"] is False


# -- the page in Chromium ------------------------------------------------------------------------------


def _page(browser, problems: list[str], requested: list[str], viewport: dict[str, int]):
    """A page in British English (dates read "20 Aug 2023") that notes every request and every problem."""
    page = browser.new_page(viewport=viewport, locale="en-GB")
    page.on("request", lambda request: requested.append(request.url))
    page.on(
        "response", lambda response: response.status >= 400 and problems.append(f"{response.status} {response.url}")
    )
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page


def _unexpected(problems: list[str], server: Any, library: Library) -> list[str]:
    """problems, less the deleted picture's thumbnail: its 404, and the console line the browser writes for it."""
    gone = f"404 {server.url}api/images/{_id(library, GONE)}/thumbnail"
    return [
        problem
        for problem in problems
        if problem.split("?")[0] != gone and "the server responded with a status of 404" not in problem
    ]


def _id(library: Library, name: str) -> str:
    from imgsearch.pictures.files import path_key

    return path_key(str(library.folder / name))


def _tile_names(page, selector=".tile") -> list[str]:
    return page.evaluate(
        "selector => [...document.querySelectorAll(selector)].map((tile) => tile.dataset.path.split('/').pop())",
        selector,
    )


def _fits_the_width(page) -> None:
    """No sideways scrolling, and the Search button's word whole and inside the window."""
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths
    button = page.locator('#search button[type="submit"]')
    assert button.inner_text() == "Search"
    inner = button.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert inner[0] <= inner[1], inner
    box = button.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= widths[1], box


@pytest.mark.slow
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone-390", "desktop-1280"])
def test_page_fits_phone_and_desktop(library, chromium, viewport, tmp_path):  # noqa: F811
    problems: list[str] = []
    requested: list[str] = []
    width = viewport["width"]
    with serving(library.engine, [library.folder]) as server:
        page = _page(chromium, problems, requested, viewport)
        page.goto(server.url)
        page.locator(".tile").first.wait_for()
        _fits_the_width(page)
        page.screenshot(path=str(tmp_path / f"library-{width}.png"))

        page.fill("#min-score", "-1")  # every picture may come back: the puppy is among them
        page.fill("#q", QUERY)
        page.press("#q", "Enter")
        page.locator(".card").first.wait_for()
        assert page.locator("#library").is_hidden()
        _fits_the_width(page)
        columns = page.evaluate(
            "() => getComputedStyle(document.getElementById('results')).gridTemplateColumns.split(' ').length"
        )
        assert columns == (2 if width == 390 else 5), columns
        page.screenshot(path=str(tmp_path / f"results-{width}.png"), full_page=True)

        page.locator(".card", has_text="puppy").click()
        page.locator("#viewer[open]").wait_for()
        image = page.locator("#viewer-image")
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle())
        # The viewer fits the window: the picture, its close button and its caption are all on screen.
        for part in ("#viewer", "#viewer-image", "#viewer .close", "#viewer-caption"):
            box = page.locator(part).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (part, box)
        _fits_the_width(page)
        page.screenshot(path=str(tmp_path / f"viewer-{width}.png"))
        page.locator("#viewer .close").click()
        assert page.locator("#viewer[open]").count() == 0
        page.close()
    for shot in ("library", "results", "viewer"):
        assert (tmp_path / f"{shot}-{width}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _unexpected(problems, server, library) == []
    assert all(url.startswith(server.url) for url in requested), requested


@pytest.mark.slow
def test_home_page_shows_the_library_newest_first_by_month(library, chromium, tmp_path):  # noqa: F811
    problems: list[str] = []
    requested: list[str] = []
    with serving(library.engine, [library.folder]) as server:
        page = _page(chromium, problems, requested, DESKTOP)
        page.goto(server.url)
        page.wait_for_selector(f"text={len(EVERY)} pictures indexed")
        page.wait_for_function("n => document.querySelectorAll('.tile').length >= n", arg=60)
        assert _tile_names(page)[:60] == EVERY[:60]
        headings = page.locator("#library-months h3").all_inner_texts()
        assert headings[:6] == ["August 2023", "May 2022", "January 2021", "March 2019", "June 2015", "December 2010"]
        puppy = page.locator('.tile[data-path$="/puppy-grass.jpg"]')
        assert puppy.locator(".date").inner_text() == "taken 20 Aug 2023"
        assert page.locator('.tile[data-path$="/car-street.jpg"] .date').inner_text() == "file date 5 Jan 2021"
        assert puppy.locator(".score").count() == 0  # the library ranks nothing
        # The deleted picture's tile says so, without asking for its thumbnail.
        gone = page.locator(f'.tile[data-path$="/{GONE}"]')
        assert gone.locator(".missing").inner_text().startswith(MISSING_TEXT) and gone.locator("img").count() == 0
        kayak = page.locator(f'.tile[data-path="{library.pending}"]')
        assert kayak.locator(".caption").inner_text() == "caption pending"
        assert kayak.locator(".caption").evaluate("el => el.classList.contains('pending')")
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=puppy.locator("img").element_handle())

        # Scrolling to the end brings the next page, under the month it goes on in.
        page.mouse.wheel(0, 100_000)
        page.wait_for_function("n => document.querySelectorAll('.tile').length === n", arg=len(EVERY))
        assert _tile_names(page) == EVERY
        headings = page.locator("#library-months h3").all_inner_texts()
        assert headings[6:] == ["March 2005", "February 2005", "January 2005"]  # each month once
        assert page.locator("#library-more").is_hidden()
        page.screenshot(path=str(tmp_path / "library-all.png"), full_page=True)

        # Going to a month starts at its newest picture.
        page.fill("#library-month", "2019-03")
        page.wait_for_function("() => document.querySelector('.tile')?.dataset.path.endsWith('/cat-sofa.jpg')")
        assert page.locator("#library-months h3").first.inner_text() == "March 2019"
        assert page.locator("#library-title").inner_text() == "March 2019 and before"
        page.fill("#library-month", "")
        page.wait_for_function("() => document.querySelector('.tile')?.dataset.path.endsWith('/puppy-grass.jpg')")
        assert page.locator("#library-title").inner_text() == "Newest pictures"

        # The one picture that cannot be shown was not asked for.
        assert problems == [] and not [url for url in requested if _id(library, GONE) in url]

        # A search replaces the library; emptying the search box brings it back.
        page.fill("#q", QUERY)
        page.press("#q", "Enter")
        page.locator(".card").first.wait_for()
        assert page.locator("#library").is_hidden() and page.locator(".card .score").count() > 0
        assert "q=" in page.url
        page.fill("#q", "")
        page.locator("#library").wait_for(state="visible")
        assert page.locator(".card").count() == 0 and "q=" not in page.url
        page.wait_for_selector(f"text={len(EVERY)} pictures indexed")
        assert _tile_names(page)[:3] == EVERY[:3]
        page.close()
    assert _unexpected(problems, server, library) == []
    pages = [url for url in requested if "/api/pictures" in url]
    assert "before=" not in pages[0] and "before=" in pages[1]


@pytest.mark.slow
def test_missing_file_shows_a_placeholder_and_dates_show_on_results(library, chromium, tmp_path):  # noqa: F811
    problems: list[str] = []
    requested: list[str] = []
    with serving(library.engine, [library.folder]) as server:
        page = _page(chromium, problems, requested, PHONE)
        page.goto(server.url)
        page.locator(".tile").first.wait_for()
        page.locator("#min-score").fill("-1")
        page.locator(".toggle label", has_text="newest").click()
        page.fill("#q", "a grey cat sleeps on a red sofa")
        page.press("#q", "Enter")
        cat = page.locator(f'.card[data-path$="/{GONE}"]')
        cat.wait_for()
        placeholder = cat.locator(".missing")
        placeholder.wait_for()
        text = placeholder.inner_text()
        assert text.startswith(MISSING_TEXT) and "imgsearch index <folder>" in text and "imgsearch prune" in text
        assert cat.locator("img").count() == 0
        assert cat.locator(".date").inner_text() == "taken 10 Mar 2019"
        assert page.locator('.card[data-path$="/car-street.jpg"] .date').inner_text() == "file date 5 Jan 2021"
        # Sorted by date, the dates the cards show go newest first.
        names = _tile_names(page, ".card")
        assert GONE in names and [name for name in names if name in NEWEST] == [
            name for name in NEWEST if name in names
        ]
        _fits_the_width(page)
        page.screenshot(path=str(tmp_path / "missing-390.png"), full_page=True)

        cat.click()
        page.locator("#viewer[open]").wait_for()
        page.locator("#viewer-missing .missing").wait_for()
        assert page.locator("#viewer-missing").inner_text().startswith(MISSING_TEXT)
        assert page.locator("#viewer-image").evaluate("el => getComputedStyle(el).display") == "none"
        assert page.locator("#viewer-original").is_hidden()
        assert page.locator("#viewer-date").inner_text().startswith("taken 10 March 2019")
        page.screenshot(path=str(tmp_path / "missing-viewer-390.png"))
        page.keyboard.press("Escape")

        page.locator('.card[data-path$="/car-street.jpg"]').click()
        page.locator("#viewer[open]").wait_for()
        page.wait_for_function(
            "() => document.getElementById('viewer-date').textContent.startsWith('file date 5 January 2021')"
        )
        assert page.locator("#viewer-missing").inner_text() == "" and page.locator("#viewer-image").is_visible()
        page.close()
    # The only failed request is the deleted picture's thumbnail, which the placeholder stands for.
    assert _unexpected(problems, server, library) == []
