// Runs cdc/api/static/app.js under node with a minimal fake DOM (tests/unit/test_ui.py).
// Usage: node run_app.js APP_JS HASH DATA_JSON -> prints the page as JSON once polling settles.
// The fake DOM never parses HTML: it records what the page built, so the test can check that
// text from the server only ever became text (no <img>/<script> element, no HTML sink used).
"use strict";
const fs = require("fs");
const [appPath, hash, dataPath] = process.argv.slice(2);
const data = dataPath ? JSON.parse(fs.readFileSync(dataPath, "utf8")) : null;
const used = new Set();

class Node_ {
  constructor(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.hidden = false; this.listeners = {}; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  append(...cs) { for (const c of cs) this.children.push(typeof c === "string" ? { text: c } : c); }
  replaceChildren(...cs) { this.children = []; this.append(...cs); }
  set textContent(t) { this.children = [{ text: String(t) }]; }
  get textContent() { return this.children.map((c) => (c.text !== undefined ? c.text : c.textContent)).join(""); }
  addEventListener(type, fn) { this.listeners[type] = fn; }
  toJSON() {
    return { tag: this.tag, attrs: this.attrs, hidden: this.hidden, children: this.children, tBodies: this.tBodies };
  }
}
for (const sink of ["innerHTML", "outerHTML"]) {
  Object.defineProperty(Node_.prototype, sink, { set() { used.add(sink); } });
}
Node_.prototype.insertAdjacentHTML = function () { used.add("insertAdjacentHTML"); };

const ids = {};
for (const id of ["status", "login", "login-message", "token", "main", "no-mirrors", "errors", "legend"]) {
  ids[id] = new Node_(id === "login" ? "form" : "p");
}
for (const id of ["mirrors", "events"]) { ids[id] = new Node_("table"); ids[id].tBodies = [new Node_("tbody")]; }
ids.status.textContent = "loading…";
ids.login.hidden = ids.main.hidden = true;
const created = [];
global.document = {
  getElementById: (id) => ids[id],
  createElement: (tag) => { const n = new Node_(tag); created.push(tag); return n; },
  createElementNS: (ns, tag) => { const n = new Node_(tag); created.push(tag); return n; },
  write: () => used.add("document.write"),
};
const store = {};
global.sessionStorage = { getItem: (k) => (k in store ? store[k] : null), setItem: (k, v) => { store[k] = String(v); },
                          removeItem: (k) => { delete store[k]; } };
global.location = { hash, pathname: "/ui", search: "" };
global.history = { replaceState: (s, t, url) => { location.hash = ""; } };
global.setInterval = () => 0;
let fetched = 0;
global.fetch = async () => { fetched += 1; return data ? { status: 200, ok: true, json: async () => data }
                                                       : { status: 401, ok: false, json: async () => ({}) }; };
let error = null;
process.on("uncaughtException", (e) => { error = String(e); });
process.on("unhandledRejection", (e) => { error = String(e); });
try {
  require(appPath);
} catch (e) {
  error = String(e);
}
setTimeout(() => {
  process.stdout.write(JSON.stringify({ error, used: [...used], created, fetched, hash: location.hash,
                                        stored: store, ids }));
}, 50);
