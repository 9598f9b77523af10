// DOM pieces of the page: messages, error cards, the model panel. Text from the model or the
// server only ever goes in through textContent or the safe Markdown renderer.

import { renderMarkdown } from "./markdown.js";

const messages = () => document.getElementById("messages");
const chat = () => document.getElementById("chat");

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Follow the newest text only if the reader is already at (or near) the bottom. */
function nearBottom() {
  const box = chat();
  return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

export function scrollToEnd(force = false) {
  const box = chat();
  if (force || nearBottom()) box.scrollTop = box.scrollHeight;
}

export function setEmptyState(visible) {
  document.getElementById("empty").hidden = !visible;
}

export function clearMessages() {
  messages().replaceChildren();
  setEmptyState(true);
}

export function addUserMessage(text) {
  const item = el("li", "msg msg-user");
  item.append(el("div", "bubble", text));
  messages().append(item);
  setEmptyState(false);
  scrollToEnd(true);
  return item;
}

const AVATAR_SVG_PATH =
  "M12 3c-1.4 0-2.5 1.1-2.5 2.5V8H8a4 4 0 0 0-4 4v4a4 4 0 0 0 4 4h8a4 4 0 0 0 4-4v-4a4 4 0 0 0-4-4h-1.5V5.5C14.5 4.1 13.4 3 12 3Zm-3 10a1.25 1.25 0 1 1 0 2.5A1.25 1.25 0 0 1 9 13Zm6 0a1.25 1.25 0 1 1 0 2.5A1.25 1.25 0 0 1 15 13Z";

function avatar() {
  const box = el("div", "avatar");
  box.setAttribute("aria-hidden", "true");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", AVATAR_SVG_PATH);
  svg.append(path);
  box.append(svg);
  return box;
}

/** One assistant reply: streams text in, then shows its figures or how it ended. */
export class AssistantMessage {
  constructor() {
    this.item = el("li", "msg msg-assistant");
    this.item.dataset.state = "waiting";
    this.content = el("div", "content markdown");
    this.content.append(typingDots());
    this.meta = el("div", "meta");
    const body = el("div", "body");
    body.append(this.content, this.meta);
    this.item.append(avatar(), body);
    messages().append(this.item);
    setEmptyState(false);
    scrollToEnd(true);
  }

  render(text) {
    const follow = nearBottom();
    if (text) {
      this.item.dataset.state = "streaming";
      this.content.replaceChildren(renderMarkdown(text));
    }
    if (follow) scrollToEnd(true);
  }

  finish(state, metaText) {
    this.item.dataset.state = state;
    if (this.content.querySelector(".typing")) this.content.replaceChildren();
    this.meta.textContent = metaText;
    if (!this.content.hasChildNodes()) this.item.classList.add("msg-empty");
    scrollToEnd();
  }

  remove() {
    this.item.remove();
  }
}

function typingDots() {
  const dots = el("span", "typing");
  dots.setAttribute("aria-label", "The model is thinking");
  for (let i = 0; i < 3; i += 1) dots.append(el("span"));
  return dots;
}

/** An error card in the chat, with optional buttons ({label, onClick}). */
export function addErrorMessage(title, detail, actions = []) {
  const item = el("li", "msg msg-error");
  item.setAttribute("role", "alert");
  const card = el("div", "error-card");
  card.append(el("strong", "error-title", title));
  if (detail) card.append(el("p", "error-detail", detail));
  if (actions.length) {
    const row = el("div", "error-actions");
    for (const action of actions) {
      const button = el("button", "btn btn-small", action.label);
      button.type = "button";
      button.addEventListener("click", () => {
        item.remove();
        action.onClick();
      });
      row.append(button);
    }
    card.append(row);
  }
  item.append(card);
  messages().append(item);
  setEmptyState(false);
  scrollToEnd(true);
  return item;
}

// ---------------------------------------------------------------------------------------
// Model card and health

export function formatCount(value) {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) return null;
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)}K`;
  return String(n);
}

function formatBytes(bytes) {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}

const text = (value) =>
  typeof value === "string" && value.trim() && value.trim().toLowerCase() !== "unknown" ? value.trim() : null;
const int = (value) => (Number.isInteger(value) && value >= 0 ? value : null);
const first = (...values) => values.find((value) => value !== null && value !== undefined) ?? null;

/** Where the model runs, in a few words for the header and a sentence for the panel. */
export function placement(offload) {
  const info = offload && typeof offload === "object" ? offload : {};
  const backend = text(info.backend)?.toLowerCase() ?? null;
  // The brief says layers_offloaded/layers_total; the server sends gpu_layers/total_layers.
  const onGpu = first(int(info.layers_offloaded), int(info.gpu_layers)) ?? 0;
  const total = first(int(info.layers_total), int(info.total_layers));
  if (!backend && total === null) return { short: null, long: null, reason: text(info.reason) };
  const device = text(info.device) ?? text(info.device_name);
  if (backend && backend !== "cpu" && onGpu > 0) {
    const name = backend.toUpperCase();
    const layers = total ? `${onGpu}/${total} layers` : `${onGpu} layers`;
    return {
      short: `${name} ${total ? `${onGpu}/${total}` : onGpu}`,
      long: `${name}${device ? ` (${device})` : ""}: ${layers} on the GPU`,
      reason: text(info.reason),
    };
  }
  return {
    short: "CPU",
    long: `CPU only${device ? ` (${device})` : ""}`,
    reason: text(info.reason),
  };
}

/** Fill the header chips and the details panel from /model-card (read defensively). */
export function showModelCard(card) {
  const data = card && typeof card === "object" ? card : {};
  const name = text(data.model_name) ?? "Unknown model";
  document.getElementById("model-name").textContent = name;
  document.title = `${name} · CRIA`;
  const where = placement(data.offload);
  const context = int(data.context_length);
  const params = formatCount(data.parameters);
  const chips = [text(data.quantization), context ? `${context.toLocaleString("en-US")} ctx` : null, where.short];
  const tags = document.getElementById("model-tags");
  tags.replaceChildren(...chips.filter(Boolean).map((chip) => el("span", "tag", chip)));
  const rows = [
    ["Model", name + (text(data.version) ? ` (${text(data.version)})` : "")],
    ["Architecture", text(data.architecture)],
    ["Parameters", params],
    ["Quantization", text(data.quantization)],
    ["Context", context ? `${context.toLocaleString("en-US")} tokens per slot` : null],
    ["Slots", int(data.slots) ? `${data.slots} in parallel` : null],
    ["File", text(data.file) && (int(data.size_bytes) ? `${text(data.file)} (${formatBytes(data.size_bytes)})` : text(data.file))],
    ["Runs on", where.long],
    ["Why", where.reason],
    ["Developed by", text(data.developed_by)],
    ["Language", Array.isArray(data.language) ? data.language.join(", ") : text(data.language)],
    ["About", text(data.description)],
  ];
  const list = document.getElementById("model-facts");
  list.replaceChildren();
  for (const [label, value] of rows) {
    if (!value) continue;
    list.append(el("dt", "", label), el("dd", "", value));
  }
}

export function showModelProblem(message) {
  document.getElementById("model-name").textContent = message;
  document.getElementById("model-tags").replaceChildren();
}

/** The status dot: ok, loading, locked (API key needed) or down. */
export function setHealth(state, label) {
  const dot = document.getElementById("status-dot");
  dot.dataset.state = state;
  dot.title = label;
  document.getElementById("status-label").textContent = label;
}
