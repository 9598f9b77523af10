// The chat page's controller: composer, conversation, streaming, Stop, errors, API key.

import { ApiError, getJson, streamChat } from "./api.js";
import { errorText, replyFigures } from "./format.js";
import { askForApiKey, editSettings, loadApiKey, loadSettings, saveApiKey, saveSettings } from "./settings.js";
import {
  AssistantMessage,
  addErrorMessage,
  addUserMessage,
  clearMessages,
  setHealth,
  showModelCard,
  showModelProblem,
} from "./ui.js";

const state = {
  settings: loadSettings(),
  apiKey: loadApiKey(),
  history: [], // completed turns only: {role, content}
  active: null, // {controller} while a reply streams
  modelCardLoaded: false,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------
// Sending and streaming

function requestBody() {
  const messages = [];
  if (state.settings.systemPrompt.trim()) {
    messages.push({ role: "system", content: state.settings.systemPrompt });
  }
  messages.push(...state.history);
  const body = {
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: state.settings.temperature,
  };
  if (state.settings.maxTokens !== null) body.max_tokens = state.settings.maxTokens;
  return body;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
  updateSendEnabled();
}

function updateSendEnabled() {
  $("send").disabled = Boolean(state.active) || !$("input").value.trim();
}

async function sendMessage(text) {
  if (state.active || !text.trim()) return;
  addUserMessage(text);
  state.history.push({ role: "user", content: text });
  await replyToLastMessage();
}

/** Stream the assistant's reply to the conversation so far; retries once a key is given. */
async function replyToLastMessage() {
  const controller = new AbortController();
  state.active = { controller };
  setBusy(true);
  try {
    for (;;) {
      const outcome = await streamOnce(controller.signal);
      if (outcome !== "retry") break;
    }
  } finally {
    state.active = null;
    setBusy(false);
    $("input").focus();
  }
}

async function streamOnce(signal) {
  const view = new AssistantMessage();
  const timing = { start: performance.now(), first: null, last: null, pieces: 0 };
  let text = "";
  try {
    const result = await streamChat(requestBody(), {
      apiKey: state.apiKey,
      signal,
      onDelta: (delta) => {
        text += delta;
        timing.pieces += 1;
        timing.last = performance.now();
        timing.first ??= timing.last;
      },
      onChunk: () => view.render(text),
    });
    view.render(text);
    view.finish("done", replyFigures(result, timing));
    state.history.push({ role: "assistant", content: text });
    return "done";
  } catch (err) {
    const error = err instanceof ApiError ? err : new ApiError("network", String(err));
    return handleFailure(error, view, text, timing);
  }
}

async function handleFailure(error, view, text, timing) {
  if (error.kind === "aborted") {
    view.render(text);
    view.finish("stopped", text ? `Stopped · ${replyFigures({}, timing)}` : "Stopped before the reply began.");
    if (text) state.history.push({ role: "assistant", content: text });
    else state.history.pop();
    return "stopped";
  }
  if (error.kind === "auth") {
    view.remove();
    const hadKey = Boolean(state.apiKey);
    const key = await askForApiKey(error.message, hadKey);
    if (key) {
      setApiKey(key);
      return "retry";
    }
  }
  if (text) {
    view.finish("error", "The reply was cut short.");
  } else {
    view.remove();
  }
  const failedTurn = state.history.pop();
  showError(error, () => {
    if (state.active) return;
    state.history.push(failedTurn);
    replyToLastMessage();
  });
  return "error";
}

function showError(error, retry) {
  const [title, detail] = errorText(error);
  const actions = [{ label: "Try again", onClick: retry }];
  if (error.kind === "auth") actions.unshift({ label: "Enter API key", onClick: () => promptForKey(retry) });
  if (error.kind === "too_long") actions.unshift({ label: "New chat", onClick: newChat });
  const card = addErrorMessage(title, detail, actions);
  card.dataset.kind = error.kind;
  if (error.status) card.dataset.status = String(error.status);
}

async function promptForKey(then) {
  const key = await askForApiKey("", Boolean(state.apiKey));
  if (key) {
    setApiKey(key);
    then();
  }
}

function setApiKey(key) {
  state.apiKey = key;
  saveApiKey(key);
  if (!state.modelCardLoaded) loadModelCard();
}

function stop() {
  if (state.active) state.active.controller.abort();
}

function newChat() {
  stop();
  state.history = [];
  clearMessages();
  $("input").value = "";
  autosize();
  $("input").focus();
}

// ---------------------------------------------------------------------------------------
// Model card and health

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
// Wiring

function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  updateSendEnabled();
}

function submitComposer() {
  const input = $("input");
  const text = input.value;
  if (state.active || !text.trim()) return;
  input.value = "";
  autosize();
  sendMessage(text);
}

async function copyText(textToCopy) {
  try {
    await navigator.clipboard.writeText(textToCopy);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = textToCopy;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

async function onCopyClick(event) {
  const button = event.target.closest(".copy-btn");
  if (!button) return;
  const code = button.closest(".code-block")?.querySelector("code")?.textContent ?? "";
  const ok = await copyText(code);
  button.textContent = ok ? "Copied" : "Copy failed";
  button.classList.toggle("copied", ok);
  setTimeout(() => {
    button.textContent = "Copy";
    button.classList.remove("copied");
  }, 1500);
}

async function openSettings() {
  const result = await editSettings(state.settings, state.apiKey);
  if (!result) return;
  state.settings = result.settings;
  saveSettings(state.settings);
  if (result.apiKey !== state.apiKey) setApiKey(result.apiKey);
}

function setModelPanel(open) {
  $("model-panel").hidden = !open;
  $("model-button").setAttribute("aria-expanded", String(open));
}

function onDocumentClick(event) {
  if ($("model-panel").hidden) return;
  if (!event.target.closest("#model-panel, #model-button")) setModelPanel(false);
}

function onDocumentKey(event) {
  if (event.key !== "Escape" || document.querySelector("dialog[open]")) return;
  if (state.active) {
    event.preventDefault();
    stop();
  } else if (!$("model-panel").hidden) {
    setModelPanel(false);
    $("model-button").focus();
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
  $("new-chat").addEventListener("click", newChat);
  $("open-settings").addEventListener("click", openSettings);
  $("model-button").addEventListener("click", () => setModelPanel($("model-panel").hidden));
  $("messages").addEventListener("click", onCopyClick);
  for (const button of document.querySelectorAll(".suggestion")) {
    button.addEventListener("click", () => sendMessage(button.textContent.trim()));
  }
  document.addEventListener("keydown", onDocumentKey);
  document.addEventListener("click", onDocumentClick);
}

wire();
autosize();
checkHealth();
$("input").focus();
