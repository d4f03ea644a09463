// omniret search page: builds a /v1/search request from text + an optional image (picker, drag-and-drop or
// paste) and shows the hits as a grid. Thumbnails come from /media/{id}, which serves indexed documents only.
"use strict";

const $ = (id) => document.getElementById(id);
let queryImage = null; // data: URL of the chosen query image

function apiHeaders() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem("omniret-api-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

function useImageFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus("not an image: " + (file ? file.name : "nothing"), true);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    queryImage = reader.result;
    $("preview").src = queryImage;
    $("preview").hidden = false;
    $("clear-image").hidden = false;
    $("drop-hint").textContent = file.name || "pasted image";
    document.body.dataset.imageReady = "1";
  };
  reader.readAsDataURL(file);
}

function clearImage() {
  queryImage = null;
  $("preview").hidden = true;
  $("clear-image").hidden = true;
  $("file").value = "";
  $("drop-hint").innerHTML = "Drop an image here, paste one (Ctrl+V), or <u>choose a file</u>";
  delete document.body.dataset.imageReady;
}

function buildRequest() {
  const content = [];
  if (queryImage) content.push({ type: "image_url", image_url: { url: queryImage } });
  const text = $("q").value.trim();
  if (text) content.push({ type: "text", text: text });
  const body = { query: { content: content }, k: parseInt($("k").value, 10) || 10 };
  const inst = $("instruction").value.trim();
  if (inst) body.instruction = inst;
  if ($("modality").value) body.modality = $("modality").value;
  if ($("rerank").checked) body.rerank = true;
  return body;
}

async function thumbnail(url, img) {
  // fetched (not <img src>) so the API key header goes along when the server needs one
  const resp = await fetch(url + (url.includes("?") ? "&" : "?") + "size=256", { headers: apiHeaders() });
  if (resp.ok) img.src = URL.createObjectURL(await resp.blob());
}

function renderHit(hit) {
  const card = document.createElement("article");
  card.className = "hit";
  card.dataset.id = hit.id;
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  if (hit.images.length) {
    const img = document.createElement("img");
    img.alt = hit.id;
    thumbnail(hit.images[0], img);
    thumb.appendChild(img);
  } else {
    thumb.classList.add("textdoc");
    thumb.textContent = "TEXT";
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.innerHTML = `<span>#${hit.rank} · ${hit.modality}</span><span class="score"></span>`;
  // after reranking, the reranker's score orders the grid; the retrieval score stays in the JSON view
  const score = hit.rerank_score !== undefined ? hit.rerank_score : hit.score;
  meta.querySelector(".score").textContent = score.toFixed(4);
  const id = document.createElement("div");
  id.className = "id";
  id.textContent = hit.id;
  card.append(thumb, meta, id);
  if (hit.text) {
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = hit.text;
    card.appendChild(text);
  }
  return card;
}

async function search(event) {
  if (event) event.preventDefault();
  const body = buildRequest();
  if (!body.query.content.length) {
    setStatus("type a query or add an image", true);
    return;
  }
  setStatus("searching…");
  const resp = await fetch("/v1/search", { method: "POST", headers: apiHeaders(), body: JSON.stringify(body) });
  const data = await resp.json();
  $("json").textContent = JSON.stringify(data, null, 2);
  if (resp.status === 401) $("key-label").hidden = false;
  if (!resp.ok) {
    setStatus(data.error ? data.error.message : "HTTP " + resp.status, true);
    return;
  }
  $("results").replaceChildren(...data.data.map(renderHit));
  setStatus(`${data.data.length} results (query: ${data.query_modality}) in ${data.took_ms} ms`);
  document.body.dataset.searches = String(parseInt(document.body.dataset.searches || "0", 10) + 1);
}

function wire() {
  $("search-form").addEventListener("submit", search);
  $("file").addEventListener("change", () => useImageFile($("file").files[0]));
  $("clear-image").addEventListener("click", (e) => { e.stopPropagation(); clearImage(); });
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    useImageFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((it) => it.type.startsWith("image/"));
    if (item) { e.preventDefault(); useImageFile(item.getAsFile()); }
  });
  $("api-key").addEventListener("change", () => localStorage.setItem("omniret-api-key", $("api-key").value));
  fetch("/healthz").then((r) => r.json()).then((h) => {
    $("model").textContent = `${h.documents} documents · encoder ${h.model}`;
    $("rerank-label").hidden = !h.reranker;
  });
}

wire();
