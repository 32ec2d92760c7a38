// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the Clarens pages: JSON-RPC calls, DOM building, messages.
// Everything shown from the server goes through textContent, never innerHTML.
"use strict";

const Clarens = (() => {
  // Resolved against the origin, never the page's URL: a URL with user:password@ in it
  // (how some people sign in) would make every fetch() fail.
  const endpoint = new URL(document.documentElement.dataset.endpoint, location.origin).href;
  let nextId = 1;

  class RpcError extends Error {
    constructor(code, message) { super(message); this.code = code; }
  }

  async function post(body) {
    let response;
    try {
      response = await fetch(endpoint, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json"},
        body: JSON.stringify(body),
      });
    } catch (e) {
      throw new RpcError(0, "the server cannot be reached (" + e.message + ")");
    }
    if (response.status === 204) return null;
    let data;
    try { data = await response.json(); } catch (e) {
      throw new RpcError(response.status, "unexpected answer from the server (HTTP " + response.status + ")");
    }
    return data;
  }

  // One call: its result, or an RpcError carrying the fault.
  async function call(method, params = []) {
    const data = await post({jsonrpc: "2.0", method, params, id: nextId++});
    if (data.error) throw new RpcError(data.error.code, data.error.message);
    return data.result;
  }

  // Several calls in one request: [{result} | {error: RpcError}] in order.
  async function batch(calls) {
    const ids = calls.map(() => nextId++);
    const data = await post(calls.map(([method, params], i) => ({jsonrpc: "2.0", method, params: params || [], id: ids[i]})));
    if (!Array.isArray(data)) throw new RpcError(data.error.code, data.error.message);
    const byId = new Map(data.map((r) => [r.id, r]));
    return ids.map((id) => {
      const r = byId.get(id);
      return r.error ? {error: new RpcError(r.error.code, r.error.message)} : {result: r.result};
    });
  }

  const KINDS = {"-32001": "Access denied", "-32002": "Burner unavailable", "-32602": "Invalid request",
                 "-32601": "Unknown method", "-32500": "Server error", "-32603": "Server error", "0": "Offline"};

  function describe(err) {
    // A service's own fault codes, from 1000 up (below are HTTP statuses): its refusals (the burner's: 2001...).
    const kind = KINDS[String(err.code)] || (err.code >= 1000 ? "Refused" : undefined);
    const text = String(err.message || err).replace(/^(access denied|burner unavailable):\s*/i, "");
    return kind ? kind + ": " + text : text;
  }

  // el("li", {class: "x", onclick: f}, "text", child, ...)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const messages = () => document.getElementById("messages");

  // Show a message (replacing an identical one); errors stay until replaced, others fade.
  function say(text, kind = "error") {
    const box = messages();
    for (const old of box.querySelectorAll(".notice")) if (old.textContent === text) old.remove();
    const note = el("p", {class: "notice " + kind, role: kind === "error" ? "alert" : "status"}, text);
    box.prepend(note);
    while (box.children.length > 4) box.lastChild.remove();
    if (kind !== "error") setTimeout(() => note.remove(), 6000);
  }

  function fail(err) { say(describe(err), "error"); }

  function bytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function when(value) {
    if (value === null || value === undefined || value === "") return "";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(String(value).replace(" ", "T") + "Z");
    return isNaN(date) ? String(value) : date.toLocaleString();
  }

  return {endpoint, call, batch, RpcError, describe, el, say, fail, bytes, when};
})();
