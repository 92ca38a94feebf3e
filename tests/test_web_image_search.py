"""Searching by an uploaded picture: POST /api/search with a multipart form, through a real uvicorn
server on 127.0.0.1 over Milvus Lite indexes with and without image vectors (a tiny random-weight
CLIP; its vectors put a picture's own copy first, and say nothing about retrieval quality)."""

from __future__ import annotations

import select
import socket
from io import BytesIO

import httpx
import pytest
from PIL import Image

from imgsearch.web.forms import FormError, parse_form
from imgsearch.web.limits import ServeLimits

from served_visual import PHOTOS, clip_indexed_engine, indexed_engine, photo_folder, serving

TOKEN = "picture-token-for-tests"


@pytest.fixture(scope="module")
def photos(coco_mini, tmp_path_factory):
    return photo_folder(coco_mini, tmp_path_factory.mktemp("picture-search"))


@pytest.fixture(scope="module")
def visual_engine(photos, embedder, tmp_path_factory):
    with clip_indexed_engine(photos, embedder, tmp_path_factory) as engine:
        yield engine


@pytest.fixture(scope="module")
def words_only_engine(photos, embedder, tmp_path_factory):
    engine = indexed_engine(photos, embedder, tmp_path_factory.mktemp("words-data"))
    yield engine
    engine.close()


def _upload(client, data, name="query.jpg", fields=None, **headers):
    return client.post("/api/search", files={"image": (name, data, "image/jpeg")}, data=fields or {}, headers=headers)


def _one_line_error(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert "\n" not in body["error"] and "Traceback" not in response.text
    return body["error"]


def test_an_indexed_picture_uploaded_comes_back_first(visual_engine, photos):
    paths = sorted(photos.glob("*.jpg"))
    with serving(visual_engine, [photos]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        # Bigger than any other request body may be: uploads have their own limit.
        large = [path for path in paths if path.stat().st_size > ServeLimits().max_body_bytes][:3]
        assert len(large) == 3
        for path in large:
            data = path.read_bytes()
            response = _upload(client, data, name=path.name, fields={"k": "3"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["image"] == path.name and body["k"] == 3 and len(body["results"]) == 3
            best = body["results"][0]
            assert best["path"] == str(path) and best["score"] > 0.99
            assert best["score"] > body["results"][1]["score"]
            assert {"id", "caption", "thumbnail", "file", "record"} <= set(best)
            assert client.get(best["file"]).content == data

        # A picture that is not indexed, in another format: its original is still first.
        with Image.open(paths[4]) as picture:
            smaller = BytesIO()
            picture.convert("RGB").resize((picture.width // 2, picture.height // 2)).save(smaller, "PNG")
        found = _upload(client, smaller.getvalue(), name="elsewhere.png", fields={"k": "1"}).json()["results"]
        assert [hit["path"] for hit in found] == [str(paths[4])]

        # Filters and the score floor are form fields, as they are query parameters on GET.
        nowhere = _upload(client, paths[0].read_bytes(), fields={"folder": str(photos / "none")})
        assert nowhere.status_code == 200 and nowhere.json()["results"] == []
        every = _upload(client, paths[0].read_bytes(), fields={"k": str(PHOTOS)}).json()["results"]
        assert len(every) == PHOTOS and every[0]["path"] == str(paths[0])
        floor = (every[0]["score"] + every[1]["score"]) / 2
        above = _upload(client, paths[0].read_bytes(), fields={"min_score": str(floor), "k": str(PHOTOS)})
        assert [hit["path"] for hit in above.json()["results"]] == [str(paths[0])]

        # The JSON body and GET still search with words on the same path.
        caption = visual_engine.store.get_rows([best["id"]])[best["id"]]["caption"]
        posted = client.post("/api/search", json={"text": caption, "k": 2, "mode": "dense"})
        assert posted.status_code == 200 and posted.json()["query"] == caption
        assert posted.json()["results"][0]["path"] == best["path"]
        got = client.get("/api/search", params={"q": caption, "k": 2, "mode": "dense"})
        assert got.json()["results"] == posted.json()["results"]
        assert client.post("/api/search", json={"k": 2}).status_code == 422

        status = client.get("/api/status").json()
        assert (
            status["index"]["visual_model"] and status["server"]["max_upload_bytes"] == ServeLimits().max_upload_bytes
        )
        schema = client.get("/openapi.json").json()["paths"]["/api/search"]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(schema)


def test_bad_uploads_get_400_in_one_line(visual_engine, photos):
    picture = sorted(photos.glob("*.jpg"))[0].read_bytes()
    with serving(visual_engine, [photos]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        garbage = _upload(client, b"\xff\xd8\xff\xe0 these bytes are no picture" * 10)
        assert garbage.status_code == 400
        assert _one_line_error(garbage).startswith("the uploaded picture cannot be read: ")
        cut = _upload(client, picture[: len(picture) // 2])
        assert cut.status_code == 400 and "cannot be read" in _one_line_error(cut)
        empty = _upload(client, b"")
        assert empty.status_code == 400 and _one_line_error(empty) == "the uploaded picture is empty"

        no_picture = client.post("/api/search", files={"photo": ("a.jpg", picture)})
        assert no_picture.status_code == 400 and "'image'" in _one_line_error(no_picture)
        with_words = _upload(client, picture, fields={"text": "a dog"})
        assert with_words.status_code == 400 and "either a picture or words" in _one_line_error(with_words)
        for fields, expected in (
            ({"k": "0"}, "k must be between 1 and 100"),
            ({"k": "many"}, "k must be a whole number"),
            ({"min_score": "nan"}, "min_score must be a finite number"),
            ({"colour": "red"}, "unknown filter 'colour'"),
        ):
            response = _upload(client, picture, fields=fields)
            assert response.status_code == 400 and expected in _one_line_error(response), (fields, response.text)

        boundary = "b0undary"
        unclosed = client.post(
            "/api/search",
            content=(
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'.encode()
                + picture
            ),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert unclosed.status_code == 400 and "no closing boundary" in _one_line_error(unclosed)
        no_boundary = client.post("/api/search", content=b"x", headers={"content-type": "multipart/form-data"})
        assert no_boundary.status_code == 400 and "boundary" in _one_line_error(no_boundary)


def test_an_index_without_image_vectors_names_the_fix(words_only_engine, photos):
    picture = sorted(photos.glob("*.jpg"))[0].read_bytes()
    with serving(words_only_engine, [photos]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        refused = _upload(client, picture)
        assert refused.status_code == 400
        message = _one_line_error(refused)
        assert "no image vectors" in message and "--visual-model" in message
        assert client.get("/api/status").json()["index"]["visual_model"] is None
        assert client.get("/api/search", params={"q": "a picture"}).status_code == 200


def test_an_upload_needs_the_token(visual_engine, photos):
    path = sorted(photos.glob("*.jpg"))[1]
    with (
        serving(visual_engine, [photos], token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        refused = _upload(client, path.read_bytes())
        assert refused.status_code == 401 and "token" in _one_line_error(refused)
        wrong = _upload(client, path.read_bytes(), **{"X-Imgsearch-Token": TOKEN + "x"})
        assert wrong.status_code == 401
        allowed = _upload(client, path.read_bytes(), **{"X-Imgsearch-Token": TOKEN})
        assert allowed.status_code == 200 and allowed.json()["results"][0]["path"] == str(path)
        bearer = _upload(client, path.read_bytes(), Authorization=f"Bearer {TOKEN}")
        assert bearer.status_code == 200


def test_an_upload_can_be_sorted_by_date(visual_engine, photos):
    picture = sorted(photos.glob("*.jpg"))[3].read_bytes()
    with serving(visual_engine, [photos]) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        by_score = _upload(client, picture, fields={"k": "6"}).json()
        by_date = _upload(client, picture, fields={"k": "6", "sort": "date"}).json()
        assert (by_score["sort"], by_date["sort"]) == ("score", "date")
        assert {hit["path"] for hit in by_date["results"]} == {hit["path"] for hit in by_score["results"]}
        newest_first = [hit.path for hit in visual_engine.query_image(Image.open(BytesIO(picture)), k=6, sort="date")]
        assert [hit["path"] for hit in by_date["results"]] == newest_first
        bad = _upload(client, picture, fields={"sort": "newest"})
        assert bad.status_code == 400 and "unknown sort 'newest'" in _one_line_error(bad)


def test_uploads_are_bounded_in_size(visual_engine, photos):
    picture = sorted(photos.glob("*.jpg"))[2].read_bytes()
    limits = ServeLimits(max_upload_bytes=len(picture) + 4096)
    with (
        serving(visual_engine, [photos], limits=limits) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert _upload(client, picture).status_code == 200
        too_big = _upload(client, picture + b"\0" * 8192)
        assert too_big.status_code == 413
        assert _one_line_error(too_big) == f"uploaded picture too large (at most {limits.max_upload_bytes} bytes)"

        def chunks():
            for _ in range(len(picture) // 1024 + 8):
                yield b"a" * 1024

        chunked = client.post(
            "/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
        )
        assert chunked.status_code == 413
        # Only a form posted to the search takes the larger limit: a JSON body keeps 64 KiB.
        json_body = client.post(
            "/api/search", content=b'{"text": "' + b"a" * 70_000 + b'"}', headers={"content-type": "application/json"}
        )
        assert json_body.status_code == 413 and "request body too large" in _one_line_error(json_body)


def test_uploads_at_once_are_capped(visual_engine, photos):
    path = sorted(photos.glob("*.jpg"))[2]
    form = _form_body(path.read_bytes())
    limits = ServeLimits(max_uploads_in_flight=1, request_timeout=120)
    with serving(visual_engine, [photos], limits=limits) as server:
        host, port = server.url.split("//")[1].rstrip("/").split(":")
        # Two uploads begun and left half sent: whichever the server took first holds the one
        # place, and the other is refused at once, before its body has arrived.
        first, second = (socket.create_connection((host, int(port)), timeout=60) for _ in range(2))
        with first, second:
            for conn in (first, second):
                conn.sendall(_form_head(host, len(form)) + form[:1000])
            answered, _, _ = select.select([first, second], [], [], 60)
            assert len(answered) == 1, "exactly one half-sent upload is refused"
            refused = answered[0]
            busy = _read_response(refused)
            assert busy.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in busy.lower()
            assert b"busy with other picture uploads" in busy
            taken = second if refused is first else first
            taken.sendall(form[1000:])
            answer = _read_response(taken)
        assert answer.startswith(b"HTTP/1.1 200 ") and str(path).encode() in answer
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert _upload(client, path.read_bytes()).status_code == 200  # the place is free again


def _form_body(picture, boundary="slowboundary"):
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="slow.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + picture
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _form_head(host, length, boundary="slowboundary"):
    return (
        f"POST /api/search HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {length}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()


def _read_response(conn):
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_form_parser_reads_what_browsers_send():
    body = (
        b'preamble\r\n--XyZ\r\nContent-Disposition: form-data; name="k"\r\n\r\n5\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="caf\xc3\xa9 \\"1\\".jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n\r\n--Xy\r\n\xff\x00\r\n\r\n--XyZ--\r\n"
    )
    k, image = parse_form('multipart/form-data; boundary="XyZ"', body)
    assert (k.name, k.filename, k.text()) == ("k", None, "5")
    assert image.name == "image" and image.filename == 'café "1".jpg' and image.content_type == "image/jpeg"
    assert image.data == b"\r\n--Xy\r\n\xff\x00\r\n"  # a near-boundary inside the file is the file's
    with pytest.raises(FormError, match="no closing boundary"):
        parse_form("multipart/form-data; boundary=XyZ", body[: body.index(b"--XyZ--")])
    with pytest.raises(FormError, match="too many form fields"):
        parse_form(
            "multipart/form-data; boundary=b",
            b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(70))
            + b"--b--",
        )
