// The cleaner's page: cards rendered from api/items, decisions posted to api/decide at once, keys for everything.
// Keys and clicks run one after another through `queued`: a decision is sent only once the previous answer has
// come, so the server records them in the order they were made, and a card says saved only when the server did.
// Plain JS, no library, nothing from the network but this server (URLs are relative to /TOKEN/).
"use strict";

const vocab = JSON.parse(document.body.dataset.vocab);
const hasModel = document.body.dataset.hasModel === "true";
const PAGE = 60; // cards added at a time
let items = [];
let shown = 0;
let current = 0;

const $ = (id) => document.getElementById(id);
const cards = $("cards");

function say(text) { $("status").textContent = text; }

// Every action (key, click, filter change) waits for the one before it: sent at once, a fast decision then undo
// could reach the server in either order and the undo take back another decision than the one shown. Nothing
// pressed meanwhile is dropped; a failure is said and the next action still runs.
let pending = Promise.resolve();
function queued(action) {
  pending = pending.then(action).catch((error) => say(error.message));
  return pending;
}

function imageUrl(fname) { return "image/" + fname.split("/").map(encodeURIComponent).join("/"); }

function query() {
  const params = new URLSearchParams();
  for (const id of ["order", "labelled", "predicted", "pair", "column", "value"]) {
    const element = $(id);
    if (element && element.value) params.set(id, element.value);
  }
  if ($("undecided").checked) params.set("undecided", "1");
  return params.toString();
}

async function call(url, body) {
  const response = await fetch(url, body === undefined ? {headers: {Accept: "application/json"}} : {
    method: "POST", headers: {"Content-Type": "application/json", Accept: "application/json"},
    body: JSON.stringify(body)});
  const data = await response.json();
  if (!response.ok) throw new Error(data.message || response.statusText);
  return data;
}

function fillSelect(select, values, keep) {
  const chosen = select.value;
  select.replaceChildren(...(keep ? [new Option(keep, "")] : []), ...values.map((value) => new Option(value, value)));
  if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
}

let lastData = null;
async function load(keepFname) {
  const data = await call("api/items?" + query());
  lastData = data;
  items = data.items;
  if ($("pair")) fillSelect($("pair"), data.pairs, "any");
  fillSelect($("value"), $("column").value ? data.values[$("column").value] : [], null);
  cards.replaceChildren();
  shown = 0;
  const at = keepFname ? items.findIndex((item) => item.fname === keepFname) : 0;
  current = Math.max(0, at);
  renderMore(current + 1);
  summary(data.counts);
  if (items.length) focusCard(current);
}

function summary(counts) {
  say(`${items.length} images listed; ${counts.decided} of ${counts.images} decided ` +
      `(${counts.relabel} relabelled, ${counts.delete} deleted, ${counts.keep} kept)`);
}

function renderMore(atLeast) {
  const until = Math.min(items.length, Math.max(shown + PAGE, atLeast || 0));
  for (; shown < until; shown++) cards.append(card(items[shown], shown));
  $("more").hidden = shown >= items.length;
}

function card(item, index) {
  const article = document.createElement("article");
  article.className = "card";
  article.tabIndex = -1;
  article.dataset.index = index;
  article.dataset.fname = item.fname;
  article.addEventListener("click", () => queued(() => { current = index; focusCard(index); }));
  fillCard(article, item);
  return article;
}

function fillCard(article, item) {
  article.classList.toggle("deleted", item.decision === "delete");
  const image = document.createElement("img");
  image.src = imageUrl(item.fname);
  image.alt = `Photo ${item.fname}, labelled ${item.labels.join(" ") || "nothing"}`;
  image.loading = "lazy";
  const name = document.createElement("p");
  name.className = "fname";
  name.textContent = item.fname;
  const decision = document.createElement("p");
  decision.className = "decision " + item.decision;
  decision.textContent = item.decision ? {relabel: "relabelled", delete: "deleted", keep: "kept"}[item.decision]
    + (item.decision === "relabel" ? ` (was ${item.csv_labels.join(" ")})` : "") : "undecided";
  const toggles = document.createElement("div");
  toggles.className = "toggles";
  toggles.setAttribute("role", "group");
  toggles.setAttribute("aria-label", "Labels");
  vocab.forEach((label, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${i + 1} ${label}`;
    button.setAttribute("aria-pressed", item.labels.includes(label) && item.decision !== "delete" ? "true" : "false");
    button.addEventListener("click", (event) => { event.stopPropagation(); queued(() => { select(article); return toggle(i); }); });
    toggles.append(button);
  });
  const actions = document.createElement("div");
  actions.className = "actions";
  for (const [key, text, action] of [["d", "Delete", del], ["k", "Keep", keep]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${key} ${text}`;
    button.addEventListener("click", (event) => { event.stopPropagation(); queued(() => { select(article); return action(); }); });
    actions.append(button);
  }
  const parts = [image, name, decision, toggles];
  if (hasModel) parts.push(bars(item));
  parts.push(actions);
  article.replaceChildren(...parts);
}

function bars(item) {
  if (!item.probabilities) {
    const note = document.createElement("p");
    note.className = "meta";
    note.textContent = "The model could not read this image.";
    return note;
  }
  const wrap = document.createElement("div");
  const table = document.createElement("table");
  table.className = "bars";
  table.setAttribute("aria-label", "Model probabilities");
  vocab.forEach((label, i) => {
    const p = item.probabilities[i];
    const row = table.insertRow();
    if (item.predicted.includes(label)) row.className = "above";
    row.insertCell().textContent = label;
    const cell = row.insertCell();
    cell.className = "bar";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${Math.round(p * 100)}%`;
    cell.append(fill);
    row.insertCell().textContent = p.toFixed(2);
  });
  const meta = document.createElement("p");
  meta.className = "meta";
  meta.textContent = `loss ${item.loss.toFixed(3)}; predicted ${item.predicted.join(" ") || "nothing"}` +
    (item.pairs.length ? `; labelled → predicted: ${item.pairs.map((pair) => pair.join(" → ")).join(", ")}` : "");
  wrap.append(table, meta);
  return wrap;
}

function select(article) { current = Number(article.dataset.index); focusCard(current); }

function focusCard(index) {
  if (index >= shown) renderMore(index + 1);
  for (const element of cards.querySelectorAll(".card.current")) element.classList.remove("current");
  const article = cards.children[index];
  if (!article) return;
  article.classList.add("current");
  article.focus({preventScroll: true});
  article.scrollIntoView({block: "nearest"});
}

function move(step) {
  if (!items.length) return;
  current = Math.min(items.length - 1, Math.max(0, current + step));
  focusCard(current);
}

function update(item, counts) {
  const index = items.findIndex((candidate) => candidate.fname === item.fname);
  if (index < 0) return;
  items[index] = item;
  if (index < shown) fillCard(cards.children[index], item);
  summary(counts);
}

async function decide(body, thenNext) {
  const item = items[current];
  if (!item) return;
  const index = current;
  const shownDecision = index < shown ? cards.children[index].querySelector(".decision") : null;
  if (shownDecision) { shownDecision.textContent = "saving…"; shownDecision.className = "decision saving"; }
  try {
    const data = await call("api/decide", {fname: item.fname, ...body});
    update(data.item, data.counts);
    if (thenNext) move(1);
  } catch (error) {
    if (index < shown) fillCard(cards.children[index], item); // as the server last said
    say(`Not saved: ${error.message}`);
  }
}

function toggle(i) {
  const item = items[current];
  if (!item || i >= vocab.length) return;
  const labels = item.decision === "delete" ? [] : [...item.labels];
  const at = labels.indexOf(vocab[i]);
  if (at >= 0) labels.splice(at, 1); else labels.push(vocab[i]);
  if (!labels.length) { say("An image keeps at least one label: add the right one first, or press d to delete it."); return; }
  return decide({action: "relabel", labels}, false);
}

function del() { return decide({action: "delete"}, true); }

function keep() {
  const item = items[current];
  if (!item) return;
  if (item.decision) move(1); // already decided: keep that decision and go on
  else return decide({action: "keep"}, true);
}

async function undo() {
  try {
    const data = await call("api/undo", {});
    if (!data.item) { say("Nothing to undo in this session."); return; }
    update(data.item, data.counts);
    const index = items.findIndex((candidate) => candidate.fname === data.item.fname);
    if (index >= 0) { current = index; focusCard(index); }
    say(`Undone: ${data.item.fname}. ` + $("status").textContent);
  } catch (error) {
    say(`Undo failed: ${error.message}`);
  }
}

function help() {
  const dialog = $("help");
  if (dialog.open) dialog.close(); else dialog.showModal();
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLSelectElement || (target instanceof HTMLInputElement && target.type !== "checkbox")) return;
  if ($("help").open && event.key !== "?") return; // Esc closes the dialog itself
  const digit = Number(event.key);
  let done = true;
  if (Number.isInteger(digit) && digit >= 1 && digit <= vocab.length) queued(() => toggle(digit - 1));
  else if (event.key === "d") queued(del);
  else if (event.key === "k") queued(keep);
  else if (event.key === "j" || event.key === "ArrowRight" || event.key === "ArrowDown") queued(() => move(1));
  else if (event.key === "h" || event.key === "ArrowLeft" || event.key === "ArrowUp") queued(() => move(-1));
  else if (event.key === "u") queued(undo);
  else if (event.key === "?") help();
  else done = false;
  if (done) event.preventDefault();
});

$("filters").addEventListener("change", () => queued(() => load()));
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("more").addEventListener("click", () => renderMore());
$("help-close").addEventListener("click", () => $("help").close());
queued(() => load().catch((error) => say(`Cannot load the images: ${error.message}`)));
