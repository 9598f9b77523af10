// The sidebar: the saved conversations (newest first), a search over their titles, and the
// open / rename / export / delete buttons of each; Export all and Import at the bottom.
// It draws what it is given and reports clicks to the controller's handlers.

import { searchConversations } from "./conversations.js";
import { el } from "./dom.js";

const list = () => document.getElementById("conversation-list");

const ICONS = {
  rename: "M4 16.5V20h3.5L18 9.5 14.5 6 4 16.5ZM16 4.5 19.5 8",
  export: "M12 4v11m-5-5 5 5 5-5M5 20h14",
  delete: "M5 7h14M10 7V4h4v3m-7 0 1 13h8l1-13",
};

function iconButton(action, label) {
  const button = el("button", "conv-action");
  button.type = "button";
  button.dataset.action = action;
  button.setAttribute("aria-label", label);
  button.title = label;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[action]);
  svg.append(path);
  button.append(svg);
  return button;
}

function when(timestamp) {
  const date = new Date(timestamp);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function row(conversation, currentId) {
  const item = el("li", "conv");
  item.dataset.id = conversation.id;
  const open = el("button", "conv-open");
  open.type = "button";
  open.dataset.action = "open";
  open.append(el("span", "conv-title", conversation.title));
  const turns = conversation.messages.filter((m) => m.role === "user").length;
  const sub = [when(conversation.updatedAt), `${turns} message${turns === 1 ? "" : "s"}`, conversation.model].filter(Boolean);
  open.append(el("span", "conv-sub", sub.join(" · ")));
  if (conversation.id === currentId) {
    item.classList.add("current");
    open.setAttribute("aria-current", "true");
  }
  const buttons = el("div", "conv-actions");
  buttons.append(iconButton("rename", "Rename"), iconButton("export", "Export as JSON"), iconButton("delete", "Delete"));
  item.append(open, buttons);
  return item;
}

/** Redraw the list from the conversations, filtered by the search box. */
export function renderSidebar(conversations, currentId) {
  const query = document.getElementById("search").value;
  const shown = searchConversations(conversations, query);
  list().replaceChildren(...shown.map((c) => row(c, currentId)));
  const empty = document.getElementById("conversation-empty");
  empty.hidden = shown.length > 0;
  empty.textContent = conversations.length ? "No title matches the search." : "No saved conversations yet.";
}

/** Turn a row's title into a text box; resolves with the new title, or null if cancelled. */
export function renameInPlace(id, current) {
  const item = list().querySelector(`li[data-id="${CSS.escape(id)}"]`);
  if (!item) return Promise.resolve(null);
  return new Promise((resolve) => {
    const input = el("input", "conv-rename");
    input.value = current;
    input.setAttribute("aria-label", "New title");
    input.maxLength = 200;
    item.classList.add("renaming");
    item.prepend(input);
    input.focus();
    input.select();
    let settled = false;
    const done = (value) => {
      if (settled) return;
      settled = true;
      input.remove();
      item.classList.remove("renaming");
      resolve(value && value.trim() ? value.trim() : null);
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        done(input.value);
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        done(null);
      }
    });
    input.addEventListener("blur", () => done(input.value));
  });
}

/**
 * Wire the sidebar's controls to handlers: {open(id), rename(id), exportOne(id),
 * remove(id), exportAll(), importFile(file), search()}.
 */
export function wireSidebar(handlers) {
  list().addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const item = event.target.closest("li[data-id]");
    if (!button || !item) return;
    const id = item.dataset.id;
    const action = { open: handlers.open, rename: handlers.rename, export: handlers.exportOne, delete: handlers.remove };
    action[button.dataset.action]?.(id);
  });
  document.getElementById("search").addEventListener("input", handlers.search);
  document.getElementById("export-all").addEventListener("click", handlers.exportAll);
  const file = document.getElementById("import-file");
  document.getElementById("import").addEventListener("click", () => file.click());
  file.addEventListener("change", () => {
    const [chosen] = file.files;
    file.value = "";
    if (chosen) handlers.importFile(chosen);
  });
}

/** On a phone the sidebar is a drawer; on a wide screen a column that can be hidden. */
export function setSidebarOpen(open) {
  document.body.dataset.sidebar = open ? "open" : "closed";
  document.getElementById("toggle-sidebar").setAttribute("aria-expanded", String(open));
}

export function narrowScreen() {
  return window.matchMedia("(max-width: 800px)").matches;
}
