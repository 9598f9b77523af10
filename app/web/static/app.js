// The chat page's controller: wires the composer, the messages' buttons, the sidebar, the
// model picker, the settings and the health/model-card polling to the modules that do it.

import { ApiError, getJson } from "./api.js";
import { copyText } from "./clipboard.js";
import { editAndResend, hooks, regenerate, sendMessage, stop } from "./chat.js";
import { exportDocument, exportFileName, parseImport } from "./conversations.js";
import { editUserMessage } from "./messages.js";
import { parseModels, saveDefaultModel, showModelPicker } from "./models.js";
import {
  addConversations,
  currentModel,
  deleteConversation,
  isSaved,
  loadSession,
  newChat,
  refreshSidebar,
  save,
  showConversation,
  state,
} from "./session.js";
import { confirmAction, editSettings, saveApiKey, saveSettings } from "./settings.js";
import { narrowScreen, renameInPlace, setSidebarOpen, wireSidebar } from "./sidebar.js";
import { hideBanner, setHealth, showBanner, showModelCard, showModelProblem } from "./ui.js";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------
// Composer

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
  updateSendEnabled();
  if (!busy && !document.querySelector("dialog[open], .edit-input, .conv-rename")) $("input").focus();
}

function updateSendEnabled() {
  $("send").disabled = Boolean(state.active) || !$("input").value.trim();
}

function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  updateSendEnabled();
}

let sessionReady = null; // the promise of loadSession(): a message typed before it waits

function submitComposer() {
  if (!state.current) {
    sessionReady?.then(submitComposer);
    return;
  }
  const input = $("input");
  const text = input.value;
  if (state.active || !text.trim()) return;
  input.value = "";
  autosize();
  sendMessage(text);
}

function setApiKey(key) {
  state.apiKey = key;
  saveApiKey(key);
  if (!state.modelCardLoaded) loadModelCard();
  loadModels();
}

// ---------------------------------------------------------------------------------------
// Message buttons: copy, edit, regenerate (one delegated listener)

async function flash(button, ok) {
  const label = button.textContent;
  button.textContent = ok ? "Copied" : "Copy failed";
  button.classList.toggle("copied", ok);
  setTimeout(() => {
    button.textContent = label === "Copied" || label === "Copy failed" ? "Copy" : label;
    button.classList.remove("copied");
  }, 1500);
}

async function onMessagesClick(event) {
  const codeCopy = event.target.closest(".copy-btn");
  if (codeCopy) {
    flash(codeCopy, await copyText(codeCopy.closest(".code-block")?.querySelector("code")?.textContent ?? ""));
    return;
  }
  const button = event.target.closest("button[data-action]");
  const item = button?.closest("li[data-index]");
  if (!item) return;
  const index = Number(item.dataset.index);
  const message = state.current.messages[index];
  if (!message) return;
  const action = button.dataset.action;
  if (action === "copy") flash(button, await copyText(message.content));
  else if (action === "regenerate") regenerate();
  else if (action === "edit" && !state.active && !item.classList.contains("editing")) {
    const text = await editUserMessage(item, message.content);
    if (text !== null) editAndResend(index, text);
  }
}

// ---------------------------------------------------------------------------------------
// Sidebar: open, rename, delete, export, import

function openConversation(id) {
  const conversation = state.conversations.get(id);
  if (conversation && conversation !== state.current) showConversation(conversation);
  if (narrowScreen()) setSidebarOpen(false);
}

async function renameConversation(id) {
  const conversation = state.conversations.get(id);
  if (!conversation) return;
  const title = await renameInPlace(id, conversation.title);
  if (title && title !== conversation.title) {
    conversation.title = title.slice(0, 200);
    await save(conversation, { touch: false });
  } else refreshSidebar();
}

async function removeConversation(id) {
  const conversation = state.conversations.get(id);
  if (conversation && (await confirmAction(`Delete “${conversation.title}”?`, "It is removed from this browser. Export it first to keep a copy."))) {
    await deleteConversation(id);
  }
}

function download(conversations) {
  const blob = new Blob([JSON.stringify(exportDocument(conversations), null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = exportFileName(conversations);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function exportAll() {
  const all = [...state.conversations.values()];
  if (all.length) download(all);
  else showBanner("info", "There are no saved conversations to export yet.");
}

async function importFile(file) {
  try {
    if (file.size > 64 * 1024 * 1024) throw new Error("The file is larger than 64 MB.");
    const { conversations, skipped } = parseImport(await file.text());
    const saved = await addConversations(conversations);
    const note = skipped ? ` (${skipped} could not be read)` : "";
    if (saved) showBanner("info", `Imported ${conversations.length} conversation${conversations.length === 1 ? "" : "s"}${note}.`);
  } catch (err) {
    showBanner("error", `Couldn't import ${file.name}: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------
// Models, model card and health

async function loadModels() {
  try {
    state.models = parseModels(await getJson("/v1/models", state.apiKey));
  } catch {
    state.models = []; // not allowed yet (API key) or not there: requests name no model
  }
  showModelPicker($("model-select"), state.models, currentModel());
}

function onModelPicked() {
  const id = $("model-select").value;
  if (!id) return;
  saveDefaultModel(id);
  state.current.model = id;
  if (isSaved(state.current)) save(state.current, { touch: false });
}

async function loadModelCard() {
  try {
    showModelCard(await getJson("/model-card", state.apiKey));
    state.modelCardLoaded = true;
  } catch (err) {
    if (err instanceof ApiError && err.kind === "auth") showModelProblem("API key needed");
    else if (err instanceof ApiError && err.kind === "loading") showModelProblem("Model loading…");
    else showModelProblem("Model info unavailable");
  }
}

let healthTimer = null;

async function checkHealth() {
  clearTimeout(healthTimer);
  let next = 15000;
  try {
    const health = await getJson("/health");
    setHealth("ok", "Ready");
    if (!state.modelCardLoaded) await loadModelCard();
    if (!state.models.length) await loadModels();
    if (health && health.status && health.status !== "ok") setHealth("loading", String(health.status));
  } catch (err) {
    const loading = err instanceof ApiError && err.kind === "loading";
    setHealth(loading ? "loading" : "down", loading ? "Loading the model…" : "Server unreachable");
    if (loading) showModelProblem("Model loading…");
    next = 2000;
  }
  healthTimer = setTimeout(checkHealth, next);
}

// ---------------------------------------------------------------------------------------
// Settings, panels, keyboard

async function openSettings() {
  const result = await editSettings(state.current.settings, state.apiKey);
  if (!result) return;
  state.current.settings = result.settings;
  saveSettings(result.settings); // also the defaults for new conversations
  if (isSaved(state.current)) save(state.current, { touch: false });
  if (result.apiKey !== state.apiKey) setApiKey(result.apiKey);
}

function setModelPanel(open) {
  $("model-panel").hidden = !open;
  $("model-button").setAttribute("aria-expanded", String(open));
}

function onDocumentClick(event) {
  if (!$("model-panel").hidden && !event.target.closest("#model-panel, #model-button")) setModelPanel(false);
  if (narrowScreen() && document.body.dataset.sidebar === "open" && !event.target.closest("#sidebar, #toggle-sidebar")) {
    setSidebarOpen(false);
  }
}

function onDocumentKey(event) {
  if (event.key !== "Escape" || document.querySelector("dialog[open]")) return;
  if (state.active) {
    event.preventDefault();
    stop();
  } else if (!$("model-panel").hidden) {
    setModelPanel(false);
    $("model-button").focus();
  } else if (narrowScreen() && document.body.dataset.sidebar === "open") {
    setSidebarOpen(false);
  }
}

function wire() {
  const input = $("input");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submitComposer();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitComposer();
    }
  });
  input.addEventListener("input", autosize);
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => {
    newChat();
    input.value = "";
    autosize();
    input.focus();
  });
  $("open-settings").addEventListener("click", openSettings);
  $("model-button").addEventListener("click", () => setModelPanel($("model-panel").hidden));
  $("model-select").addEventListener("change", onModelPicked);
  $("messages").addEventListener("click", onMessagesClick);
  $("toggle-sidebar").addEventListener("click", () => setSidebarOpen(document.body.dataset.sidebar !== "open"));
  $("banner-close").addEventListener("click", hideBanner);
  for (const button of document.querySelectorAll(".suggestion")) {
    button.addEventListener("click", () => sendMessage(button.textContent.trim()));
  }
  document.addEventListener("keydown", onDocumentKey);
  document.addEventListener("click", onDocumentClick);
  document.addEventListener("conversation-shown", () => showModelPicker($("model-select"), state.models, currentModel()));
  wireSidebar({
    open: openConversation,
    rename: renameConversation,
    exportOne: (id) => state.conversations.has(id) && download([state.conversations.get(id)]),
    remove: removeConversation,
    exportAll,
    importFile,
    search: refreshSidebar,
  });
  hooks.busy = setBusy;
  hooks.apiKey = setApiKey;
}

async function start() {
  setSidebarOpen(!narrowScreen());
  // Narrowing the window (a phone turned, a split screen) closes the drawer; widening shows the column.
  window.matchMedia("(max-width: 800px)").addEventListener("change", (event) => setSidebarOpen(!event.matches));
  wire();
  autosize();
  sessionReady = loadSession();
  await sessionReady;
  document.body.dataset.ready = "true";
  checkHealth();
  $("input").focus();
}

start();
