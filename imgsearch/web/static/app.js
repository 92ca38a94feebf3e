// The search page: asks /api/search with words or a picture, shows a thumbnail grid, opens a
// picture in a dialog. Text from the index is only ever set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

// Set from /api/status: whether the index has image vectors, and the server's upload limit.
let pictureSearch = false;
let maxUploadBytes = 0;
let queryPictureURL = null;
// While an index run goes on, the status line is asked again this often, until a search replaces it.
const RUN_POLL_MS = 5000;
let statusPoll = null;
let statusShown = true;

async function getJSON(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || `request failed (${response.status})`);
  return body;
}

function fileName(path) {
  return String(path || "").split("/").pop();
}

// A picture stored by an index run's first pass has no caption yet: it says so in the caption's place.
function showCaption(element, record) {
  element.textContent = record.caption_pending ? "caption pending" : record.caption;
  element.classList.toggle("pending", Boolean(record.caption_pending));
}

function card(hit) {
  const item = document.createElement("li");
  item.className = "card";
  item.tabIndex = 0;
  item.dataset.path = hit.path;
  const image = document.createElement("img");
  image.src = hit.thumbnail;
  image.alt = hit.caption_pending ? fileName(hit.path) : hit.caption;
  image.loading = "lazy";
  const caption = document.createElement("p");
  caption.className = "caption";
  showCaption(caption, hit);
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
  // The view is what a browser can show (HEIC and RAW come as JPEG); the link keeps the original.
  $("viewer-image").src = record.view || hit.view || record.file || hit.file;
  $("viewer-original").href = record.file || hit.file;
  $("viewer-original").download = fileName(record.path);
  $("viewer-image").alt = record.caption_pending ? fileName(record.path) : record.caption;
  showCaption($("viewer-caption"), record);
  $("viewer-ocr").textContent = record.ocr_text || "";
  $("viewer-ocr-section").hidden = !record.ocr_text;
  $("viewer-path").textContent = record.path;
  $("viewer").showModal();
}

// The search controls' values by /api/search parameter name, left out where not set; only the
// filters and the score floor (data-filter) when searching by picture.
function controlValues(forPicture) {
  const chosen = [];
  const controls = document.querySelectorAll(forPicture ? ".controls [data-filter]" : ".controls [name]");
  for (const control of controls) {
    if (control.type === "radio" && !control.checked) continue;
    const value = control.value.trim();
    if (value) chosen.push([control.name, value]);
  }
  return chosen;
}

async function search(event) {
  event.preventDefault();
  const text = $("q").value.trim();
  if (!text) return;
  const params = new URLSearchParams({ q: text, k: $("k").value });
  for (const [name, value] of controlValues(false)) {
    if (!(name === "sort" && value === "score")) params.set(name, value);
  }
  showQueryPicture(null);
  stopStatusPoll();
  $("status").textContent = "searching…";
  try {
    const started = performance.now();
    showResults(await getJSON(`/api/search?${params}`), started);
    history.replaceState(null, "", `?${new URLSearchParams({ q: text })}`);
  } catch (error) {
    $("status").textContent = error.message;
  }
}

function showResults(answer, started) {
  $("results").replaceChildren(...answer.results.map(card));
  const took = Math.round(performance.now() - started);
  $("status").textContent = answer.results.length
    ? `${answer.results.length} pictures in ${took} ms`
    : "no good match";
}

async function searchByPicture(file) {
  if (!pictureSearch) {
    $("status").textContent = "searching by picture needs an index built with --visual-model";
    return;
  }
  if (maxUploadBytes && file.size > maxUploadBytes) {
    const most = (maxUploadBytes / 1048576).toFixed(0);
    $("status").textContent = `${file.name} is too large to send (at most ${most} MiB): try a smaller copy`;
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("k", $("k").value);
  for (const [name, value] of controlValues(true)) form.append(name, value);
  const sort = document.querySelector('.controls input[name="sort"]:checked');
  if (sort && sort.value !== "score") form.append("sort", sort.value);
  showQueryPicture(file);
  stopStatusPoll();
  $("status").textContent = "searching…";
  try {
    const started = performance.now();
    showResults(await getJSON("/api/search", { method: "POST", body: form }), started);
    // A picture cannot be put in the address; what is there would repeat an older search.
    history.replaceState(null, "", location.pathname);
  } catch (error) {
    $("status").textContent = error.message;
  }
}

function showQueryPicture(file) {
  if (queryPictureURL) URL.revokeObjectURL(queryPictureURL);
  queryPictureURL = file ? URL.createObjectURL(file) : null;
  const shown = $("query-picture");
  shown.hidden = !file;
  if (file) shown.src = queryPictureURL;
  else shown.removeAttribute("src");
}

function hasFiles(event) {
  return Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types).includes("Files");
}

function acceptDroppedPictures() {
  // Dropped files are always caught: the browser would otherwise leave the page to show one.
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = pictureSearch ? "copy" : "none";
    document.body.classList.toggle("dropping", pictureSearch);
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dropping");
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    document.body.classList.remove("dropping");
    const [file] = event.dataTransfer.files;
    if (file) searchByPicture(file);
  });
  $("picture").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = ""; // choosing the same file again is a new search
    if (file) searchByPicture(file);
  });
}

// "12 min": an index run's time left, as roughly as a person wants it.
function humanDuration(seconds) {
  seconds = Math.max(0, seconds);
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  return `${Math.round(hours / 24)} days`;
}

// In the words of `imgsearch status` (imgsearch/status_text.py); the counts of captions only while some wait.
function indexSummary(index) {
  const counts = [`${index.images} pictures indexed`];
  if (index.caption_pending > 0) counts.push(`${index.captioned} captioned`, `${index.caption_pending} caption pending`);
  if (index.visual_model) counts.push(`${index.with_image_vectors} with image vectors`);
  const lines = [counts.join(", ")];
  const run = index.run;
  if (run) {
    const parts = [`${run.found} found`, `${run.stored} stored`, `${run.captioned} of ${run.to_caption} captioned`];
    if (run.caption_rate) parts.push(`${run.caption_rate < 10 ? Number(run.caption_rate.toPrecision(2)) : Math.round(run.caption_rate)} pictures/s`);
    if (run.eta_seconds !== null && run.eta_seconds !== undefined) parts.push(`ETA ${humanDuration(run.eta_seconds)}`);
    lines.push(`indexing: ${parts.join(", ")}`);
  }
  return lines.join(" · ");
}

function stopStatusPoll() {
  clearTimeout(statusPoll);
  statusPoll = null;
  statusShown = false; // an answer still on its way must not write over the search's line
}

async function loadStatus(showSize) {
  try {
    const status = await getJSON("/api/status");
    pictureSearch = Boolean(status.index.visual_model);
    // Searching by looks alone needs the index's image vectors.
    const visualMode = document.querySelector('#mode option[value="visual"]');
    visualMode.hidden = visualMode.disabled = !pictureSearch;
    maxUploadBytes = status.server.max_upload_bytes || 0;
    $("picture-search").hidden = !pictureSearch;
    if (!showSize || !statusShown) return;
    $("status").textContent = indexSummary(status.index);
    // The counts move while a run stores and captions: follow them until the run ends or a search starts.
    if (status.index.run) statusPoll = setTimeout(() => loadStatus(true), RUN_POLL_MS);
  } catch (error) {
    if (showSize && statusShown) $("status").textContent = error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", search);
  // A new order or mode shows the current words' results again at once; typed filters wait for Enter.
  for (const control of document.querySelectorAll('.controls input[name="sort"], #mode')) {
    control.addEventListener("change", () => { if ($("q").value.trim()) $("search").requestSubmit(); });
  }
  acceptDroppedPictures();
  const initial = new URLSearchParams(location.search).get("q");
  loadStatus(!initial);
  if (initial) {
    $("q").value = initial;
    $("search").requestSubmit();
  }
});
