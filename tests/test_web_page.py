"""The web page in real headless Chromium (Debian's chromium, driven by Playwright)."""

import base64
import shutil

import pytest

from dated_pictures import NEWEST_FIRST, PICTURES, QUERY, dated_engine, dated_folder
from served_coco import GIRAFFE, running_server
from served_visual import PHOTOS, clip_indexed_engine, indexed_engine, photo_folder, serving

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does this)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.mark.slow
def test_search_shows_the_photo_and_opens_it(served_index, chromium, tmp_path):
    with running_server(served_index) as server:
        page = chromium.new_page(viewport={"width": 1200, "height": 900})
        requested, problems = [], []
        page.on("request", lambda request: requested.append(request.url))
        page.on(
            "response", lambda response: response.status >= 400 and problems.append(f"{response.status} {response.url}")
        )
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))

        page.goto(server.url)
        page.wait_for_selector("text=161 pictures indexed")
        page.fill("#q", "a giraffe standing near trees")
        page.press("#q", "Enter")
        card = page.locator(f'.card[data-path$="/coco-mini/images/{GIRAFFE}"]')
        card.wait_for()
        assert "giraffe" in card.locator(".caption").inner_text().lower()
        assert card.locator(".score").inner_text().startswith("score 0.")
        # The thumbnail really loaded (an image that failed has no natural width).
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=card.locator("img").element_handle())
        assert card.locator("img").evaluate("el => el.naturalWidth") <= 320
        page.screenshot(path=str(tmp_path / "results.png"))

        card.click()
        viewer = page.locator("#viewer[open]")
        viewer.wait_for()
        image = page.locator("#viewer-image")
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle())
        assert image.evaluate("el => el.naturalWidth") == 500  # the original, not the thumbnail
        assert "giraffe" in page.locator("#viewer-caption").inner_text().lower()
        assert page.locator("#viewer-path").inner_text().endswith(GIRAFFE)
        page.screenshot(path=str(tmp_path / "opened.png"))
        page.close()

    for shot in ("results.png", "opened.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / shot).stat().st_size > 20_000
    assert problems == []
    # Everything the page needed came from the server itself: no CDN, no outside address.
    assert requested and all(url.startswith(server.url) for url in requested), requested


@pytest.fixture(scope="module")
def page_photos(coco_mini, tmp_path_factory):
    return photo_folder(coco_mini, tmp_path_factory.mktemp("page-photos"))


@pytest.fixture(scope="module")
def picture_engine(page_photos, embedder, tmp_path_factory):
    """The photos indexed with image vectors from a tiny random-weight CLIP."""
    with clip_indexed_engine(page_photos, embedder, tmp_path_factory) as engine:
        yield engine


def _watched_page(chromium, problems, requested):
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    page.on("request", lambda request: requested.append(request.url))
    page.on(
        "response", lambda response: response.status >= 400 and problems.append(f"{response.status} {response.url}")
    )
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page


def _dropped_file(page, path):
    """A DataTransfer in the page holding path's bytes as a File, as a drag from the desktop brings."""
    return page.evaluate_handle(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            return transfer;
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name],
    )


def _first_card_is(page, path):
    page.wait_for_function("path => document.querySelector('.card')?.dataset.path === path", arg=str(path))


@pytest.mark.slow
def test_a_chosen_or_dropped_picture_finds_itself_first(picture_engine, page_photos, chromium, tmp_path):
    paths = sorted(page_photos.glob("*.jpg"))
    problems, requested = [], []
    with serving(picture_engine, [page_photos]) as server:
        page = _watched_page(chromium, problems, requested)
        page.goto(server.url)
        page.wait_for_selector(f"text={PHOTOS} pictures indexed")
        page.locator("#picture-search").wait_for(state="visible")

        page.set_input_files("#picture", str(paths[1]))
        _first_card_is(page, paths[1])
        assert page.locator(".card").count() == PHOTOS
        assert page.locator("#status").inner_text().startswith(f"{PHOTOS} pictures in ")
        first = page.locator(".card").first
        assert first.locator(".score").inner_text().startswith(("score 0.99", "score 1.0"))
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=first.locator("img").element_handle())
        preview = page.locator("#query-picture")
        page.wait_for_function("el => !el.hidden && el.complete && el.naturalWidth > 0", arg=preview.element_handle())
        page.screenshot(path=str(tmp_path / "chosen.png"))

        transfer = _dropped_file(page, paths[5])
        page.dispatch_event("main", "dragover", {"dataTransfer": transfer})
        assert page.evaluate("document.body.classList.contains('dropping')")
        page.dispatch_event("main", "drop", {"dataTransfer": transfer})
        _first_card_is(page, paths[5])
        assert not page.evaluate("document.body.classList.contains('dropping')")
        page.locator(".card").first.click()
        page.locator("#viewer[open]").wait_for()
        assert page.locator("#viewer-path").inner_text() == str(paths[5])

        # A search with words afterwards takes the picture away and shows its own results.
        page.keyboard.press("Escape")
        page.fill("#q", "a picture")
        page.press("#q", "Enter")
        page.wait_for_function("() => document.getElementById('query-picture').hidden")
        page.close()

    assert (tmp_path / "chosen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == []
    uploads = [url for url in requested if url == server.url + "api/search"]
    assert len(uploads) == 2  # one chosen, one dropped
    assert all(url.startswith((server.url, "blob:" + server.url.rstrip("/"))) for url in requested), requested


@pytest.mark.slow
def test_without_image_vectors_the_page_offers_no_picture_search(page_photos, embedder, chromium, tmp_path_factory):
    engine = indexed_engine(page_photos, embedder, tmp_path_factory.mktemp("page-words-data"))
    problems, requested = [], []
    try:
        with serving(engine, [page_photos]) as server:
            page = _watched_page(chromium, problems, requested)
            page.goto(server.url)
            page.wait_for_selector(f"text={PHOTOS} pictures indexed")
            assert page.locator("#picture-search").is_hidden()
            page.dispatch_event(
                "main", "drop", {"dataTransfer": _dropped_file(page, sorted(page_photos.glob("*.jpg"))[0])}
            )
            page.wait_for_selector("text=searching by picture needs an index built with --visual-model")
            assert page.locator(".card").count() == 0
            page.close()
    finally:
        engine.close()
    assert problems == []
    assert server.url + "api/search" not in requested


def _card_names(page):
    return page.evaluate(
        "() => [...document.querySelectorAll('.card')].map((card) => card.dataset.path.split('/').pop())"
    )


def _cards_become(page, expected):
    page.wait_for_function(
        "names => JSON.stringify([...document.querySelectorAll('.card')].map((c) => c.dataset.path.split('/').pop()))"
        " === JSON.stringify(names)",
        arg=expected,
    )


@pytest.mark.slow
def test_the_sort_toggle_and_the_score_floor_change_the_results(embedder, chromium, tmp_path_factory):
    base = tmp_path_factory.mktemp("page-dated")
    folder = dated_folder(base)
    engine = dated_engine(folder, embedder, base / "data")
    by_score = [hit.path.rsplit("/", 1)[-1] for hit in engine.query(QUERY, k=24, min_score=-1)]
    assert by_score != NEWEST_FIRST  # otherwise the toggle could not be seen to do anything
    floor = sum(hit.score for hit in engine.query(QUERY, k=3, min_score=-1)[1:3]) / 2  # the best two pass
    problems, requested = [], []
    try:
        with serving(engine, [folder]) as server:
            page = _watched_page(chromium, problems, requested)
            page.goto(server.url)
            page.wait_for_selector(f"text={len(PICTURES)} pictures indexed")
            page.fill("#min-score", "-1")
            page.fill("#q", QUERY)
            page.press("#q", "Enter")
            _cards_become(page, by_score)

            page.locator(".toggle label", has_text="newest").click()  # searches again at once
            _cards_become(page, NEWEST_FIRST)
            page.fill("#min-score", f"{floor:.4f}")
            page.press("#min-score", "Enter")
            _cards_become(page, [name for name in NEWEST_FIRST if name in by_score[:2]])
            assert page.locator("#status").inner_text().startswith("2 pictures in ")
            page.locator(".toggle label", has_text="best match").click()
            _cards_become(page, by_score[:2])
            assert _card_names(page) == by_score[:2]
            page.close()
    finally:
        engine.close()
    assert problems == []
    searches = [url for url in requested if "/api/search?" in url]
    assert len(searches) == 4 and "sort=date" in searches[1] and "min_score=" in searches[2]
    assert "sort=" not in searches[3]  # best match is the server's own order
