// Runs maskclassifier/clean/static/clean.js in node with a minimal fake DOM and a slow fake server, presses keys
// faster than the server answers, and prints what the server saw as JSON (tests/test_clean_writes.py reads it).
"use strict";
const fs = require("fs");
const vm = require("vm");

class Element {
  constructor(id) {
    this.id = id; this.children = []; this.dataset = {}; this.style = {}; this.value = ""; this.checked = false;
    this.textContent = ""; this.className = ""; this.options = []; this.hidden = false; this.open = false;
    this.classList = {toggle() {}, add() {}, remove() {}};
  }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = [...nodes]; }
  addEventListener(type, listener) { (this.listeners ||= {})[type] = listener; }
  setAttribute() {} focus() {} scrollIntoView() {} close() {} showModal() {}
  querySelector() { return new Element(); }
  querySelectorAll() { return []; }
  insertRow() { return {insertCell: () => new Element()}; }
}
const elements = {};
const document = {
  body: {dataset: {vocab: JSON.stringify(["Cloth", "Medical"]), hasModel: "false"}},
  getElementById: (id) => (elements[id] ||= new Element(id)),
  createElement: () => new Element(),
  addEventListener(type, listener) { this.keydown = listener; },
};
const items = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"].map((fname, i) => (
  {fname, csv_index: i, labels: ["Cloth"], csv_labels: ["Cloth"], decision: "", probabilities: null, predicted: [],
   loss: 0, pairs: [], columns: {}}));
const counts = {images: 4, decided: 0, relabel: 0, delete: 0, keep: 0};
const seen = [];
let inFlight = 0, maxInFlight = 0, undoStack = [];
function answer(url, body) {
  if (url.startsWith("api/items")) return {items, pairs: [], values: {}, counts};
  if (url === "api/undo") {
    const fname = undoStack.pop();
    const item = items.find((candidate) => candidate.fname === fname);
    if (item) item.decision = "";
    return {item: item || null, counts};
  }
  const item = items.find((candidate) => candidate.fname === body.fname);
  item.decision = body.action;
  if (body.action === "relabel") item.labels = body.labels;
  undoStack.push(body.fname);
  return {item: {...item}, counts};
}
function fetch(url, options) {
  const body = options.body ? JSON.parse(options.body) : undefined;
  inFlight += 1; maxInFlight = Math.max(maxInFlight, inFlight);
  return new Promise((resolve) => setTimeout(() => {  // a slow server: later requests could overtake
    inFlight -= 1;
    if (options.method === "POST") seen.push({url, ...body});
    const data = answer(url, body);
    resolve({ok: true, json: async () => data});
  }, url === "api/undo" ? 5 : 30));
}
class HTMLSelectElement {} class HTMLInputElement {}
const context = {document, fetch, setTimeout, console, URLSearchParams, HTMLSelectElement, HTMLInputElement,
                 Option: function Option(text, value) { this.text = text; this.value = value; }};
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), context);
setTimeout(() => {
  for (const key of ["k", "d", "u", "1", "k"]) document.keydown({key, target: {}, preventDefault() {}});
  setTimeout(() => {
    process.stdout.write(JSON.stringify({seen, maxInFlight, decided: items.map((item) => item.decision)}));
  }, 1000);
}, 100);
