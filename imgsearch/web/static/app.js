// The search page: asks /api/search, shows a thumbnail grid, opens a picture in a dialog.
// Text from the index is only ever set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || `request failed (${response.status})`);
  return body;
}

function card(hit) {
  const item = document.createElement("li");
  item.className = "card";
  item.tabIndex = 0;
  item.dataset.path = hit.path;
  const image = document.createElement("img");
  image.src = hit.thumbnail;
  image.alt = hit.caption;
  image.loading = "lazy";
  const caption = document.createElement("p");
  caption.className = "caption";
  caption.textContent = hit.caption;
  const score = document.createElement("p");
  score.className = "score";
  score.textContent = `score ${hit.score.toFixed(3)}`;
  item.append(image, caption, score);
  const open = () => openViewer(hit);
  item.addEventListener("click", open);
  item.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  return item;
}

async function openViewer(hit) {
  const record = await getJSON(hit.record).catch(() => hit);
  $("viewer-image").src = record.file || hit.file;
  $("viewer-image").alt = record.caption;
  $("viewer-caption").textContent = record.caption;
  $("viewer-ocr").textContent = record.ocr_text || "";
  $("viewer-ocr-section").hidden = !record.ocr_text;
  $("viewer-path").textContent = record.path;
  $("viewer").showModal();
}

async function search(event) {
  event.preventDefault();
  const text = $("q").value.trim();
  if (!text) return;
  const params = new URLSearchParams({ q: text, k: $("k").value });
  $("status").textContent = "searching…";
  try {
    const started = performance.now();
    const answer = await getJSON(`/api/search?${params}`);
    $("results").replaceChildren(...answer.results.map(card));
    const took = Math.round(performance.now() - started);
    $("status").textContent = answer.results.length
      ? `${answer.results.length} pictures in ${took} ms`
      : "no good match";
    history.replaceState(null, "", `?${new URLSearchParams({ q: text })}`);
  } catch (error) {
    $("status").textContent = error.message;
  }
}

async function showIndexSize() {
  try {
    const status = await getJSON("/api/status");
    $("status").textContent = `${status.index.images} pictures indexed`;
  } catch (error) {
    $("status").textContent = error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", search);
  const initial = new URLSearchParams(location.search).get("q");
  if (initial) {
    $("q").value = initial;
    $("search").requestSubmit();
  } else {
    showIndexSize();
  }
});
