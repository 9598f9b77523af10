// DOM pieces of the page outside the messages: error cards, the banner, the model panel,
// the status dot. Text from the server only ever goes in through textContent.

import { el, scrollToEnd, setEmptyState } from "./dom.js";

const messages = () => document.getElementById("messages");

export function clearMessages() {
  messages().replaceChildren();
  setEmptyState(true);
}

/** The banner above the chat: storage problems (kind "error") or a short notice ("info"). */
export function showBanner(kind, message) {
  const banner = document.getElementById("banner");
  banner.dataset.kind = kind;
  banner.setAttribute("role", kind === "error" ? "alert" : "status");
  document.getElementById("banner-text").textContent = message;
  banner.hidden = false;
}

export function hideBanner() {
  document.getElementById("banner").hidden = true;
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
