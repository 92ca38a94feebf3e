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
// A picture captioned by several captioners shows each caption on its own line, naming its captioner on hover.
function showCaption(element, record) {
  element.classList.toggle("pending", Boolean(record.caption_pending));
  const parts = record.captions || [];
  if (record.caption_pending || parts.length < 2) {
    element.textContent = record.caption_pending ? "caption pending" : record.caption;
    return;
  }
  element.replaceChildren(...parts.map((part) => {
    const line = document.createElement("span");
    line.className = "caption-part";
    line.title = part.captioner;
    line.textContent = part.text;
    return line;
  }));
}

// A picture's date as the library orders it (imgsearch/library.py picture_date): the date taken, else its
// file's modification time, which rows also hold in taken_at when the picture carries no date of its own.
function pictureDate(metadata) {
  const usable = (value) => typeof value === "number" && Number.isFinite(value) && value !== 0;
  const taken = metadata ? metadata.taken_at : undefined;
  const modified = metadata ? metadata.mtime : undefined;
  if (usable(taken) && taken !== modified) return { when: new Date(taken * 1000), source: "taken" };
  if (usable(modified)) return { when: new Date(modified * 1000), source: "file" };
  return null;
}

// Dates taken are stored as the camera's clock read as UTC: shown in UTC, they read as the camera wrote them.
const DAY = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
const MOMENT = new Intl.DateTimeFormat(undefined, { dateStyle: "long", timeStyle: "short", timeZone: "UTC" });
const MONTH = new Intl.DateTimeFormat(undefined, { month: "long", year: "numeric", timeZone: "UTC" });

function dateText(date, format) {
  if (!date) return "no date";
  return `${date.source === "taken" ? "taken" : "file date"} ${format.format(date.when)}`;
}

// In the thumbnail's place when the picture cannot be shown: whether its file is gone, and what to run.
function missingPlaceholder(record) {
  const box = document.createElement("div");
  box.className = "missing";
  const title = document.createElement("strong");
  const advice = document.createElement("span");
  if (record && record.missing) {
    title.textContent = "File missing";
    advice.append("Moved or deleted since it was indexed: run ", code("imgsearch index <folder>"),
      " again, or ", code("imgsearch prune"), ".");
  } else if (record && record.servable === false) {
    title.textContent = "File not served";
    advice.append("It lies outside the folders this server serves, or changed since it was indexed: run ",
      code("imgsearch index <folder>"), " again.");
  } else {
    title.textContent = "Picture cannot be shown";
    advice.textContent = "Its file could not be read as a picture.";
  }
  box.append(title, advice);
  return box;
}

function code(text) {
  const element = document.createElement("code");
  element.textContent = text;
  return element;
}

// A thumbnail or view that failed to load is replaced by the placeholder, once the record says why.
function whenMissing(image, recordURL) {
  image.addEventListener("error", async () => {
    const record = await getJSON(recordURL).catch(() => null);
    if (image.isConnected) image.replaceWith(missingPlaceholder(record));
  }, { once: true });
}

function thumbnail(hit) {
  const image = document.createElement("img");
  whenMissing(image, hit.record);
  image.alt = hit.caption_pending ? fileName(hit.path) : hit.caption;
  image.loading = "lazy";
  image.src = hit.thumbnail;
  return image;
}

function card(hit, className = "card") {
  const item = document.createElement("li");
  item.className = className;
  item.tabIndex = 0;
  item.dataset.path = hit.path;
  // The library says which files it cannot serve: those are not asked for.
  const image = hit.servable === false ? missingPlaceholder(hit) : thumbnail(hit);
  const caption = document.createElement("p");
  caption.className = "caption";
  showCaption(caption, hit);
  const date = document.createElement("p");
  date.className = "date";
  date.textContent = dateText(pictureDate(hit.metadata), DAY);
  item.append(image, caption, date);
  if (typeof hit.score === "number") {
    const score = document.createElement("p");
    score.className = "score";
    score.textContent = `score ${hit.score.toFixed(3)}`;
    item.append(score);
  }
  const open = () => openViewer(hit);
  item.addEventListener("click", open);
  item.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  return item;
}

async function openViewer(hit) {
  const record = await getJSON(hit.record).catch(() => hit);
  // The view is what a browser can show (HEIC and RAW come as JPEG); the link keeps the original.
  const missing = record.servable === false;
  $("viewer-image").hidden = missing;
  $("viewer-missing").replaceChildren(...(missing ? [missingPlaceholder(record)] : []));
  if (missing) $("viewer-image").removeAttribute("src");
  else $("viewer-image").src = record.view || hit.view || record.file || hit.file;
  $("viewer-original").hidden = missing;
  $("viewer-date").textContent = dateText(pictureDate(record.metadata || hit.metadata), MOMENT);
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
  $("library").hidden = true;
  $("results").replaceChildren(...answer.results.map((hit) => card(hit)));
  const took = Math.round(performance.now() - started);
  $("status").textContent = answer.results.length
    ? `${answer.results.length} pictures in ${took} ms`
    : noResultsText(answer);
}

// Why a search came back empty: all its best pictures fell below the score floor, or nothing matched.
function noResultsText(answer) {
  if (!answer.no_good_match) return "no match";
  const pictures = answer.below_floor === 1 ? "picture" : "pictures";
  const floor = answer.floor === null || answer.floor === undefined ? "" : ` ${answer.floor}`;
  return `no good match; ${answer.below_floor} ${pictures} scored below the floor${floor} (a min score of 0 shows them)`;
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

// The library: every picture newest first, a page at a time as the reader scrolls, until a search.
const LIBRARY_PAGE = 60;
// How close to the end of the library (in pixels) the next page is asked for.
const LIBRARY_AHEAD = 800;
let libraryNext = null; // the next page's cursor (/api/pictures next_before); null when all are shown
let libraryLoading = false;
let libraryStarted = false;
let libraryGeneration = 0; // a page that answers after the library started over is dropped

function monthKey(date) {
  return date ? `${date.when.getUTCFullYear()}-${String(date.when.getUTCMonth() + 1).padStart(2, "0")}` : "undated";
}

// Tiles under the heading of their month; a page that goes on in the last month shown goes on under it.
function appendToLibrary(pictures) {
  const months = $("library-months");
  for (const picture of pictures) {
    const date = pictureDate(picture.metadata);
    const key = monthKey(date);
    let group = months.lastElementChild;
    if (!group || group.dataset.month !== key) {
      group = document.createElement("section");
      group.className = "month";
      group.dataset.month = key;
      const heading = document.createElement("h3");
      heading.textContent = date ? MONTH.format(date.when) : "No date";
      const grid = document.createElement("ol");
      grid.className = "grid";
      group.append(heading, grid);
      months.append(group);
    }
    group.lastElementChild.append(card(picture, "tile"));
  }
}

// The first day after a "go to" month (2024-03 -> 2024-04-01): the library starts at that month's newest.
function afterMonth(value) {
  const [year, month] = value.split("-").map(Number);
  if (!year || !month) return "";
  const next = new Date(Date.UTC(year, month, 1));
  return next.toISOString().slice(0, 10);
}

async function loadLibraryPage(fresh) {
  const months = $("library-months");
  if (fresh) {
    libraryGeneration += 1;
    libraryStarted = true;
    libraryNext = afterMonth($("library-month").value) || null;
    months.replaceChildren();
    const chosen = libraryNext ? new Date(`${$("library-month").value}-01T00:00:00Z`) : null;
    $("library-title").textContent = chosen ? `${MONTH.format(chosen)} and before` : "Newest pictures";
  } else if (libraryLoading || !libraryNext) {
    return;
  }
  const generation = libraryGeneration;
  libraryLoading = true;
  $("library-more").hidden = true;
  const params = new URLSearchParams({ limit: String(LIBRARY_PAGE) });
  if (libraryNext) params.set("before", libraryNext);
  try {
    const page = await getJSON(`/api/pictures?${params}`);
    if (generation !== libraryGeneration) return;
    appendToLibrary(page.pictures);
    libraryNext = page.next_before;
    if (!months.childElementCount) months.append(libraryNote(fresh && $("library-month").value ? "No pictures from then or before." : "No pictures indexed yet: run imgsearch index <folder>."));
  } catch (error) {
    if (generation === libraryGeneration) {
      libraryNext = null;
      months.append(libraryNote(error.message));
    }
  } finally {
    if (generation === libraryGeneration) {
      libraryLoading = false;
      $("library-more").hidden = !libraryNext;
      // A page too short to fill the window would never scroll the next one in.
      if (libraryNext && !$("library").hidden && nearLibraryEnd()) loadLibraryPage(false);
    }
  }
}

function libraryNote(text) {
  const note = document.createElement("p");
  note.className = "library-note";
  note.textContent = text;
  return note;
}

function nearLibraryEnd() {
  return $("library-more").parentElement.getBoundingClientRect().top < window.innerHeight + LIBRARY_AHEAD;
}

function showLibrary() {
  $("library").hidden = false;
  if (!libraryStarted) loadLibraryPage(true);
}

// An emptied search box brings the library back, with the index's status line.
function backToLibrary() {
  if ($("q").value.trim() || !$("library").hidden) return;
  $("results").replaceChildren();
  showQueryPicture(null);
  history.replaceState(null, "", location.pathname);
  statusShown = true;
  loadStatus(true);
  showLibrary();
}

function followLibrary() {
  $("library-more").addEventListener("click", () => loadLibraryPage(false));
  $("library-month").addEventListener("change", () => loadLibraryPage(true));
  $("q").addEventListener("input", backToLibrary);
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting) && !$("library").hidden) loadLibraryPage(false);
  }, { rootMargin: `0px 0px ${LIBRARY_AHEAD}px 0px` });
  observer.observe($("library-more").parentElement);
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
  followLibrary();
  const initial = new URLSearchParams(location.search).get("q");
  loadStatus(!initial);
  if (initial) {
    $("library").hidden = true;
    $("q").value = initial;
    $("search").requestSubmit();
  } else {
    showLibrary();
  }
});
