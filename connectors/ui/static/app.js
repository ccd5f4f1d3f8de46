// qvl ui: the search page's script (no framework). Builds the filter form from /api/info,
// sends the query to /api/search as JSON and draws the grid of hits.
"use strict";
const $ = (id) => document.getElementById(id);
let info = {fields: {}, rerank: false, max_upload_bytes: 10485760};
let imageData = null;  // the query image as a data: URI

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function fieldInputs(name, type) {
  const box = el("div", {class: "field"});
  if (type === "bool") {
    box.append(el("label", {for: `f-${name}`}, name));
    const sel = el("select", {id: `f-${name}`, "data-field": name, "data-type": type});
    for (const [v, t] of [["", "any"], ["true", "yes"], ["false", "no"]]) sel.append(el("option", {value: v}, t));
    box.append(sel);
  } else if (type === "int" || type === "float") {
    box.append(el("label", {for: `f-${name}-min`}, `${name} from`));
    box.append(el("input", {id: `f-${name}-min`, type: "number", step: "any", "data-field": name, "data-op": "$gte"}));
    box.append(el("label", {for: `f-${name}-max`}, "to"));
    box.append(el("input", {id: `f-${name}-max`, type: "number", step: "any", "data-field": name, "data-op": "$lte"}));
  } else {
    box.append(el("label", {for: `f-${name}`}, name));
    box.append(el("input", {id: `f-${name}`, type: "text", "data-field": name, "data-type": "str"}));
  }
  return box;
}

function buildFilter() {
  const parts = [];
  for (const input of document.querySelectorAll("#filter-fields [data-field]")) {
    const value = input.value.trim();
    if (value === "") continue;
    const name = input.dataset.field;
    if (input.dataset.op) parts.push({[name]: {[input.dataset.op]: Number(value)}});
    else if (input.dataset.type === "bool") parts.push({[name]: value === "true"});
    else parts.push({[name]: value});
  }
  const raw = $("filter-json").value.trim();
  if (raw) {
    let parsed;
    try { parsed = JSON.parse(raw); } catch (e) { throw new Error(`the JSON filter is not valid JSON: ${e.message}`); }
    parts.push(parsed);
  }
  if (!parts.length) return null;
  return parts.length === 1 ? parts[0] : {"$and": parts};
}

function setImage(file) {
  showError("");
  if (!file) return;
  if (file.size > info.max_upload_bytes) {
    showError(`the image is larger than the ${Math.floor(info.max_upload_bytes / 1048576)} MB upload limit`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    imageData = reader.result;
    const ok = file.type.startsWith("image/");
    $("preview").hidden = !ok;
    if (ok) $("preview").src = imageData;
    $("clear-image").hidden = false;
  };
  reader.readAsDataURL(file);
}

function clearImage() {
  imageData = null;
  $("image").value = "";
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  $("clear-image").hidden = true;
}

function card(hit) {
  const li = el("li", {class: "hit", "data-id": hit.id, tabindex: "-1"});
  li.append(el("div", {class: "rank"}, `#${hit.rank}`));
  const label = [hit.modality, hit.where].filter(Boolean).join(" ");
  if (hit.thumb) {
    const img = el("img", {src: hit.thumb, alt: `${hit.id} ${label}`.trim(), loading: "lazy"});
    if (hit.link) { const a = el("a", {href: hit.link, target: "_blank", rel: "noopener"}); a.append(img); li.append(a); }
    else li.append(img);
  }
  let scores = `score ${hit.score.toFixed(4)}`;
  if (hit.rerank_score !== null && hit.rerank_score !== undefined) scores += ` · rerank ${hit.rerank_score.toFixed(4)}`;
  li.append(el("div", {class: "scores"}, scores));
  if (hit.text) li.append(el("div", {class: "text"}, hit.text));
  const src = el("div", {class: "src"});
  const name = hit.media ? hit.media.split("#")[0].split("/").pop() : String(hit.id);
  if (hit.link) src.append(el("a", {href: hit.link, target: "_blank", rel: "noopener"}, `${name}${hit.where ? " (" + hit.where + ")" : ""}`));
  else src.append(document.createTextNode(hit.media ? `${hit.media}${hit.media_note ? " (" + hit.media_note + ")" : ""}` : name));
  li.append(src);
  return li;
}

async function search(event) {
  if (event) event.preventDefault();
  showError("");
  let filter;
  try { filter = buildFilter(); } catch (e) { showError(e.message); return; }
  const body = {text: $("q").value, image: imageData, k: $("k").value, filter: filter,
                rerank: $("rerank").checked, candidates: $("candidates").value};
  $("status").textContent = "searching…";
  $("results").setAttribute("aria-busy", "true");
  const started = performance.now();
  let answer;
  try {
    const response = await fetch("api/search", {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify(body)});
    answer = await response.json().catch(() => ({error: `the server answered ${response.status} ${response.statusText}`}));
    if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
  } catch (e) {
    $("status").textContent = "";
    $("results").removeAttribute("aria-busy");
    showError(e.message);
    return;
  }
  const grid = $("results");
  grid.replaceChildren(...answer.hits.map(card));
  grid.removeAttribute("aria-busy");
  const ms = Math.round(performance.now() - started);
  $("status").textContent = `${answer.hits.length} results in ${ms} ms`;
  document.body.dataset.searches = String(Number(document.body.dataset.searches || 0) + 1);
}

async function start() {
  try {
    const response = await fetch("api/info");
    info = await response.json();
    if (!response.ok) throw new Error(info.error || `the server answered ${response.status}`);
  } catch (e) { showError(e.message); return; }
  $("collection").textContent = `· ${info.collection}`;
  $("k").max = info.max_k; $("candidates").max = info.max_k;
  const names = Object.keys(info.fields);
  $("filters").hidden = names.length === 0;
  $("filter-fields").replaceChildren(...names.map((n) => fieldInputs(n, info.fields[n])));
  $("rerank").disabled = !info.rerank;
  $("candidates").disabled = !info.rerank;
  if (!info.rerank) $("rerank").title = "no reranker loaded (qvl ui --reranker)";
  document.body.dataset.ready = "1";
}

$("search").addEventListener("submit", search);
$("image").addEventListener("change", () => setImage($("image").files[0]));
$("clear-image").addEventListener("click", clearImage);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  for (const item of e.clipboardData ? e.clipboardData.items : []) {
    if (item.kind === "file" && item.type.startsWith("image/")) { setImage(item.getAsFile()); e.preventDefault(); return; }
  }
});
start();
