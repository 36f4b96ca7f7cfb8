// FaceSearch page: a thin client of the web gateway's JSON API (facesearch/web/app.py), which calls
// the search service over gRPC. Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const IMAGE_EXTENSIONS = /\.(jpe?g|png|webp|bmp)$/i;
const UPLOAD_BATCH = 6;
const $ = (selector) => document.querySelector(selector);

const state = {
  apiKey: localStorage.getItem("facesearch.apiKey") || "",
  collection: localStorage.getItem("facesearch.collection") || "",
  imageUrls: new Map(),
  find: { selfie: null, token: "", photoCount: 0 },
  searchSeq: 0, // only the latest search may change the grid (the slider can start several)
  enrolShots: [],
};

// ---- talking to the gateway ----------------------------------------------------------------------

class PageError extends Error {
  constructor(message, code = "") {
    super(message);
    this.code = code;
  }
}

function authHeaders() {
  return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new PageError("The web gateway cannot be reached. Is `facesearch up` still running?");
  }
  return parseReply(response.status, await response.text());
}

function parseReply(status, text) {
  let data = null;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    throw new PageError(`The web gateway answered ${status} without a readable body.`);
  }
  if (status >= 400) {
    const error = (data && data.error) || {};
    throw new PageError(error.message || `The request failed (HTTP ${status}).`, error.code || "");
  }
  return data;
}

// XMLHttpRequest rather than fetch: only it reports upload progress.
function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    xhr.upload.onload = () => onProgress(1);
    xhr.onload = () => {
      try {
        resolve(parseReply(xhr.status, xhr.responseText));
      } catch (error) {
        reject(error);
      }
    };
    xhr.onerror = () => reject(new PageError("The web gateway cannot be reached. Is `facesearch up` still running?"));
    xhr.send(form);
  });
}

const collectionPath = (name = state.collection) => `/api/collections/${encodeURIComponent(name)}`;

// Photos are fetched with the API key header, so <img> shows them from blob: URLs.
async function photoUrl(photoId, size) {
  const key = `${state.apiKey}|${state.collection}|${size}|${photoId}`;
  if (!state.imageUrls.has(key)) {
    const path = `${collectionPath()}/photo?id=${encodeURIComponent(photoId)}&size=${size}`;
    state.imageUrls.set(
      key,
      fetch(path, { headers: authHeaders() }).then(async (response) => {
        if (!response.ok) throw new PageError(`Photo ${photoId} is not kept by this page.`);
        return URL.createObjectURL(await response.blob());
      }),
    );
  }
  return state.imageUrls.get(key);
}

// ---- small view helpers --------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function showError(error) {
  const box = $("#error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = error instanceof PageError ? error.message : `Unexpected error: ${error.message || error}`;
  box.hidden = false;
  if (!(error instanceof PageError)) console.error(error);
  // The service wants a (different) key: ask for it.
  if (error.code === "UNAUTHENTICATED" || error.code === "PERMISSION_DENIED") {
    $("details.key").open = true;
    $("#api-key").focus();
  }
}

async function guarded(action) {
  showError(null);
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// Boxes are in pixels of the image as displayed (EXIF orientation applied), so they are placed as
// fractions of the photo's own size and scale with whatever size the image is shown at.
function drawBox(frame, box, size, { other = false, label = "" } = {}) {
  const [x1, y1, x2, y2] = box;
  const node = el("div", {
    class: other ? "box other" : "box",
    style:
      `left:${(100 * x1) / size.width}%;top:${(100 * y1) / size.height}%;` +
      `width:${(100 * (x2 - x1)) / size.width}%;height:${(100 * (y2 - y1)) / size.height}%`,
  });
  if (label) node.append(el("span", { class: "box-label", text: label }));
  frame.append(node);
  return node;
}

function imageSize(img) {
  return new Promise((resolve) => {
    const done = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
    if (img.complete && img.naturalWidth) done();
    else img.addEventListener("load", done, { once: true });
  });
}

// ---- collections (the event picker and the Events page) --------------------------------------------

async function refreshCollections() {
  const { collections } = await api("GET", "/api/collections");
  const select = $("#collection");
  select.replaceChildren(
    ...collections.map((c) => el("option", { value: c.name, text: c.display_name ? `${c.display_name} (${c.name})` : c.name })),
  );
  if (!collections.some((c) => c.name === state.collection)) state.collection = collections[0]?.name || "";
  select.value = state.collection;
  renderEventsTable(collections);
  return collections;
}

function renderEventsTable(collections) {
  const rows = collections.map((c) =>
    el(
      "tr",
      { "data-name": c.name },
      el("td", {}, el("strong", { text: c.name }), c.display_name ? el("span", { class: "display", text: c.display_name }) : null),
      el("td", { class: "num", text: String(c.photo_count) }),
      el("td", { class: "num", text: String(c.face_count) }),
      el("td", { class: "num", text: String(c.person_count) }),
      el(
        "td",
        {},
        el(
          "div",
          { class: "actions" },
          el("button", { type: "button", class: "secondary", text: "Upload", "aria-label": `Upload photos to ${c.name}`, onclick: () => openIn(c.name, "upload") }),
          el("button", { type: "button", class: "secondary", text: "Find me", "aria-label": `Find me in ${c.name}`, onclick: () => openIn(c.name, "find") }),
          el("button", { type: "button", class: "danger", text: "Delete", "aria-label": `Delete ${c.name}`, onclick: () => deleteCollection(c.name) }),
        ),
      ),
    ),
  );
  $("#events-table tbody").replaceChildren(...rows);
  if (!rows.length) {
    $("#events-table tbody").append(el("tr", {}, el("td", { colspan: "5", text: "No events yet: create one above." })));
  }
}

function openIn(name, page) {
  setCollection(name);
  location.hash = `#${page}`;
}

function setCollection(name) {
  state.collection = name;
  localStorage.setItem("facesearch.collection", name);
  $("#collection").value = name;
  resetFind();
}

async function deleteCollection(name) {
  if (!confirm(`Delete event ${name} with all its photos and faces?`)) return;
  await guarded(async () => {
    const reply = await api("DELETE", collectionPath(name));
    $("#events-status").textContent =
      `Deleted ${name}: ${reply.photos_deleted} photos, ${reply.faces_deleted} faces, ${reply.persons_deleted} people.`;
    await refreshCollections();
  });
}

$("#create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const name = $("#new-name").value.trim();
    const created = await api("POST", "/api/collections", { name, display_name: $("#new-display").value.trim() });
    $("#events-status").textContent = `Created event ${created.name}.`;
    event.target.reset();
    setCollection(created.name);
    await refreshCollections();
  });
});

$("#collection").addEventListener("change", (event) => setCollection(event.target.value));

function requireCollection() {
  if (!state.collection) throw new PageError("Create an event first (Events page).");
  return state.collection;
}

// ---- Upload page ---------------------------------------------------------------------------------

const uploadTotals = { photos: 0, faces: 0, rejected: 0, noface: 0, errors: 0 };

function resetUploadSummary() {
  Object.keys(uploadTotals).forEach((k) => (uploadTotals[k] = 0));
  $("#upload-errors").replaceChildren();
  $("#batches").replaceChildren();
  renderUploadSummary();
}

function renderUploadSummary() {
  $("#upload-summary").hidden = false;
  for (const [name, value] of Object.entries(uploadTotals)) $(`#sum-${name}`).textContent = String(value);
}

function addUploadError(externalId, message) {
  uploadTotals.errors += 1;
  $("#upload-errors").append(el("li", {}, el("code", { text: externalId }), `: ${message}`));
}

async function uploadFiles(entries) {
  await guarded(async () => {
    const collection = requireCollection();
    resetUploadSummary();
    const images = [];
    for (const entry of entries) {
      if (IMAGE_EXTENSIONS.test(entry.id)) images.push(entry);
      else addUploadError(entry.id, "skipped: not a JPEG, PNG, WebP or BMP file");
    }
    renderUploadSummary();
    const batches = [];
    for (let i = 0; i < images.length; i += UPLOAD_BATCH) batches.push(images.slice(i, i + UPLOAD_BATCH));
    const rows = batches.map((batch, index) => {
      const progress = el("progress", { max: "1", value: "0", "aria-label": `Batch ${index + 1} progress` });
      const status = el("span", { text: "waiting" });
      const row = el("li", {}, el("span", { text: `Batch ${index + 1} of ${batches.length} (${batch.length} photos)` }), progress, status);
      $("#batches").append(row);
      return { progress, status };
    });
    for (const [index, batch] of batches.entries()) {
      const { progress, status } = rows[index];
      const form = new FormData();
      for (const entry of batch) {
        form.append("photos", entry.file, entry.file.name);
        form.append("ids", entry.id);
      }
      status.textContent = "uploading";
      try {
        const reply = await upload(`${collectionPath(collection)}/photos`, form, (fraction) => {
          progress.value = fraction * 0.5;
          if (fraction >= 1) status.textContent = "finding faces";
        });
        for (const result of reply.results) {
          if (!result.ok) {
            addUploadError(result.external_id, result.error.message);
            continue;
          }
          uploadTotals.photos += 1;
          uploadTotals.faces += result.faces_indexed;
          uploadTotals.rejected += result.rejected.length;
          if (result.faces_indexed === 0 && result.outcome !== "unchanged") uploadTotals.noface += 1;
        }
        progress.value = 1;
        status.textContent = "done";
      } catch (error) {
        status.textContent = "failed";
        for (const entry of batch) addUploadError(entry.id, error.message);
      }
      renderUploadSummary();
    }
    $("#upload-summary").dataset.done = "true";
    state.imageUrls.clear();
  });
}

$("#upload-files").addEventListener("change", (event) => {
  const files = [...event.target.files].map((file) => ({ file, id: file.name }));
  event.target.value = "";
  uploadFiles(files);
});

// Ids are paths inside the chosen folder, as `facesearch index` makes them.
const insideFolder = (path) => path.split("/").slice(1).join("/");

$("#upload-folder").addEventListener("change", (event) => {
  const files = [...event.target.files].map((file) => ({ file, id: insideFolder(file.webkitRelativePath) || file.name }));
  event.target.value = "";
  uploadFiles(files);
});

// A dropped folder arrives as FileSystemEntry objects: walk it, keeping paths as the photos' ids.
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files].map((file) => ({ file, id: file.name }));
  const found = [];
  async function walk(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      found.push({ file, id: (prefix || "") + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        // A dropped folder's own name is left out, as when it is chosen.
        const inside = prefix === null ? "" : `${prefix}${entry.name}/`;
        for (const child of batch) await walk(child, inside);
      }
    }
  }
  for (const entry of entries) await walk(entry, entry.isDirectory ? null : "");
  return found;
}

const dropZone = $("#drop-zone");
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("over");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
dropZone.addEventListener("drop", async (event) => {
  event.preventDefault();
  dropZone.classList.remove("over");
  uploadFiles(await droppedFiles(event.dataTransfer));
});

// ---- the camera ----------------------------------------------------------------------------------

async function startCamera(video, buttons) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new PageError("The camera is not available on this page (browsers allow it on https or localhost only); choose a photo instead.");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (error) {
    throw new PageError(`The camera could not be started (${error.name}); choose a photo instead.`);
  }
  video.srcObject = stream;
  await video.play();
  buttons.forEach((button) => (button.disabled = false));
}

function snapshot(video) {
  if (!video.videoWidth) throw new PageError("The camera has no picture yet; try again in a moment.");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
}

// ---- Find me page --------------------------------------------------------------------------------

function resetFind() {
  state.find = { selfie: null, token: "", photoCount: 0 };
  $("#results").replaceChildren();
  $("#load-more").hidden = true;
  $("#find-status").textContent = "";
  $("#selfie").hidden = true;
}

async function search(selfie, more = false) {
  const collection = requireCollection();
  const seq = ++state.searchSeq;
  if (!more) {
    state.find = { selfie, token: "", photoCount: 0 };
    $("#results").replaceChildren();
    $("#load-more").hidden = true;
    await showSelfie(selfie, null);
  }
  $("#find-status").textContent = "Searching…";
  const form = new FormData();
  form.append("image", state.find.selfie, "selfie.jpg");
  form.append("top_k", $("#page-size").value);
  form.append("min_similarity", $("#min-similarity").value);
  if (more) form.append("page_token", state.find.token);
  let reply;
  try {
    reply = await api("POST", `${collectionPath(collection)}/search`, form);
  } catch (error) {
    if (seq !== state.searchSeq) return;
    $("#find-status").textContent = "";
    // A selfie without a face is not searched again when the slider moves.
    if (error.code === "NO_FACE") state.find.selfie = null;
    throw error;
  }
  if (seq !== state.searchSeq) return;
  if (!more && reply.query_faces.length) await showSelfie(selfie, reply.query_faces[0].box);
  state.find.token = reply.next_page_token;
  state.find.photoCount += reply.matches.length;
  for (const match of reply.matches) $("#results").append(resultTile(collection, match));
  $("#load-more").hidden = !reply.next_page_token;
  const count = state.find.photoCount;
  $("#find-status").textContent = count
    ? `${count} photo${count === 1 ? "" : "s"} of you${reply.next_page_token ? " so far" : ""}, best first.`
    : "No photos of you at this similarity. Try lowering the minimum similarity.";
}

async function showSelfie(blob, box) {
  const frame = $("#selfie");
  const img = frame.querySelector("img");
  frame.querySelectorAll(".box").forEach((node) => node.remove());
  if (img.dataset.blob !== String(blob.size) || !img.src) {
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    img.dataset.blob = String(blob.size);
  }
  frame.hidden = false;
  if (box) drawBox(frame, box, await imageSize(img));
}

function resultTile(collection, match) {
  const similarity = match.similarity.toFixed(2);
  const img = el("img", { alt: `Photo ${match.photo_id}`, loading: "lazy" });
  const frame = el("figure", { class: "frame" }, img);
  const tile = el(
    "li",
    { class: "tile", "data-photo-id": match.photo_id, "data-similarity": String(match.similarity) },
    el(
      "button",
      { type: "button", "aria-label": `Photo ${match.photo_id}, similarity ${similarity}; open it large`, onclick: () => openViewer(collection, match) },
      frame,
      el("span", { class: "caption" }, el("span", { class: "id", text: match.photo_id }), el("span", { class: "similarity", text: similarity })),
    ),
  );
  if (match.photo) {
    drawBox(frame, match.box, match.photo, { label: similarity });
    photoUrl(match.photo_id, "thumb").then((url) => (img.src = url)).catch(() => (img.alt = "photo not kept by this page"));
  } else {
    img.alt = `Photo ${match.photo_id} was not uploaded through this page`;
  }
  return tile;
}

async function openViewer(collection, match) {
  const dialog = $("#viewer");
  const frame = $("#viewer-frame");
  const img = frame.querySelector("img");
  frame.querySelectorAll(".box").forEach((node) => node.remove());
  img.removeAttribute("src");
  img.alt = `Photo ${match.photo_id}`;
  $("#viewer-title").textContent = match.photo_id;
  $("#viewer-status").textContent = "Finding every face…";
  dialog.showModal();
  await guarded(async () => {
    img.src = await photoUrl(match.photo_id, "full");
    const reply = await api("GET", `${collectionPath(collection)}/faces?id=${encodeURIComponent(match.photo_id)}`);
    const size = reply.photo;
    const centre = (b) => [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2];
    const [mx, my] = centre(match.box);
    for (const face of reply.faces) {
      const [cx, cy] = centre(face.box);
      const isMatch = Math.hypot(cx - mx, cy - my) < (match.box[2] - match.box[0]) / 2;
      drawBox(frame, face.box, size, { other: !isMatch, label: isMatch ? `you ${match.similarity.toFixed(2)}` : "" });
    }
    const n = reply.faces.length;
    $("#viewer-status").textContent = `${n} face${n === 1 ? "" : "s"} in this photo; yours is the solid box.`;
  });
}

$("#viewer-close").addEventListener("click", () => $("#viewer").close());

$("#find-start").addEventListener("click", () => guarded(() => startCamera($("#find-video"), [$("#find-snap")])));
$("#find-snap").addEventListener("click", () => guarded(async () => search(await snapshot($("#find-video")))));
$("#find-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (file) guarded(() => search(file));
});
$("#load-more").addEventListener("click", () => guarded(() => search(null, true)));

let sliderTimer = null;
$("#min-similarity").addEventListener("input", (event) => {
  $("#min-similarity-value").textContent = Number(event.target.value).toFixed(2);
  clearTimeout(sliderTimer);
  if (state.find.selfie) sliderTimer = setTimeout(() => guarded(() => search(state.find.selfie)), 300);
});
$("#page-size").addEventListener("change", () => state.find.selfie && guarded(() => search(state.find.selfie)));

// ---- People page ---------------------------------------------------------------------------------

function shotItem(shot, result) {
  const img = el("img", { alt: shot.name, src: shot.url });
  const frame = el("figure", { class: "frame" }, img);
  const item = el("li", { "data-name": shot.name }, frame);
  if (result && result.ok) {
    imageSize(img).then((size) => drawBox(frame, result.box, size));
    if (result.template) item.append(el("span", { class: "badge", text: "template" }));
  } else if (result) {
    item.append(el("p", { class: "failed", text: result.error.message }));
  }
  return item;
}

function renderShots(results) {
  $("#enrol-shots").replaceChildren(...state.enrolShots.map((shot, index) => shotItem(shot, results && results[index])));
}

function addShot(blob, name) {
  if (state.enrolShots.length >= 10) throw new PageError("At most 10 photos per enrolment.");
  state.enrolShots.push({ blob, name, url: URL.createObjectURL(blob) });
  renderShots(null);
}

$("#people-start").addEventListener("click", () =>
  guarded(() => startCamera($("#people-video"), [$("#enrol-snap"), $("#identify-snap"), $("#verify-snap")])),
);
$("#enrol-snap").addEventListener("click", () =>
  guarded(async () => addShot(await snapshot($("#people-video")), `camera ${state.enrolShots.length + 1}`)),
);
$("#enrol-files").addEventListener("change", (event) =>
  guarded(async () => {
    for (const file of event.target.files) addShot(file, file.name);
    event.target.value = "";
  }),
);

$("#enrol-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const collection = requireCollection();
    if (!state.enrolShots.length) throw new PageError("Add at least one photo of the person (camera or files).");
    const form = new FormData();
    form.append("external_id", $("#enrol-id").value.trim());
    state.enrolShots.forEach((shot) => form.append("images", shot.blob, shot.name));
    const reply = await api("POST", `${collectionPath(collection)}/persons`, form);
    renderShots(reply.images);
    const who = reply.person.external_id;
    const template = reply.template_replaced
      ? `The photo marked "template" is now their template (quality ${reply.person.template_quality.toFixed(2)}).`
      : "Their earlier template is better and was kept.";
    $("#enrol-result").textContent = `${reply.created ? "Enrolled" : "Updated"} ${who}. ${template}`;
    state.enrolShots = [];
  });
});

async function identify(image) {
  const form = new FormData();
  form.append("image", image, "face.jpg");
  form.append("top_k", "5");
  const reply = await api("POST", `${collectionPath(requireCollection())}/identify`, form);
  const target = $("#identify-result");
  if (!reply.candidates.length) {
    target.replaceChildren(el("p", { class: "nomatch", text: `Nobody matched (threshold ${reply.threshold.toFixed(2)}).` }));
    return;
  }
  target.replaceChildren(
    el("p", { class: "match", text: `This is ${reply.candidates[0].person.external_id}.` }),
    el("ol", {}, ...reply.candidates.map((c) => el("li", { text: `${c.person.external_id}: similarity ${c.similarity.toFixed(2)}` }))),
  );
}

async function verify(image) {
  const form = new FormData();
  form.append("image", image, "face.jpg");
  form.append("person_id", $("#verify-id").value.trim());
  const reply = await api("POST", `${collectionPath(requireCollection())}/verify`, form);
  const verdict = reply.match ? "Match" : "No match";
  $("#verify-result").replaceChildren(
    el("p", {
      class: reply.match ? "match" : "nomatch",
      text: `${verdict}: similarity ${reply.similarity.toFixed(2)} (threshold ${reply.threshold.toFixed(2)}).`,
    }),
  );
}

function chosenFile(input) {
  if (!input.files[0]) throw new PageError("Choose a photo first, or use the camera.");
  return input.files[0];
}

$("#identify-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => identify(chosenFile($("#identify-file"))));
});
$("#identify-snap").addEventListener("click", () => guarded(async () => identify(await snapshot($("#people-video")))));
$("#verify-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => verify(chosenFile($("#verify-file"))));
});
$("#verify-snap").addEventListener("click", () =>
  guarded(async () => {
    if (!$("#verify-id").value.trim()) throw new PageError("Say which person to verify against.");
    await verify(await snapshot($("#people-video")));
  }),
);

// ---- API key and page switching ------------------------------------------------------------------

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.apiKey = $("#api-key").value.trim();
  localStorage.setItem("facesearch.apiKey", state.apiKey);
  state.imageUrls.clear();
  event.target.closest("details").open = false;
  guarded(refreshCollections);
});

function showPage() {
  const page = (location.hash || "#events").slice(1);
  const known = ["events", "upload", "find", "people"].includes(page) ? page : "events";
  document.querySelectorAll("main > section").forEach((section) => (section.hidden = section.dataset.page !== known));
  document.querySelectorAll("nav a").forEach((link) => {
    if (link.dataset.page === known) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  });
  $("#collection-bar").hidden = known === "events";
  document.title = `FaceSearch: ${$(`nav a[data-page="${known}"]`).textContent}`;
  guarded(refreshCollections);
}

window.addEventListener("hashchange", showPage);

(async function start() {
  $("#api-key").value = state.apiKey;
  try {
    const config = await api("GET", "/api/config");
    $("#key-hint").textContent = config.key_configured ? "(optional: this gateway has one)" : "(if the service asks for one)";
  } catch {
    // showPage reports an unreachable gateway.
  }
  showPage();
})();
