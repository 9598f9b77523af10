// The page's state and its persistence: every conversation (kept in memory and in the
// store), which one is open, the API key, the served models, the reply streaming now.
//
// A new conversation is a draft until its first message: only then is it saved and listed.
// Every save goes to the store at once; a failure shows in the banner and is not retried
// silently (the next change saves the whole conversation again anyway).

import { newConversation } from "./conversations.js";
import { renderConversation } from "./messages.js";
import { effectiveModel, loadDefaultModel } from "./models.js";
import { loadApiKey, loadSettings } from "./settings.js";
import { renderSidebar } from "./sidebar.js";
import { openStore } from "./store.js";
import { showBanner } from "./ui.js";

const CURRENT_KEY = "cria.currentConversation";

export const state = {
  apiKey: loadApiKey(),
  store: null,
  conversations: new Map(), // id -> conversation, saved ones only
  current: null, // the open conversation (maybe a draft, not in `conversations` yet)
  active: null, // {controller, conversation} while a reply streams
  models: [], // [{id, state}] from /v1/models
  deleted: new Set(), // ids deleted in this tab: a reply stopped by the delete must not save it back
  modelCardLoaded: false,
};

function remember(key, value) {
  try {
    if (value) window.localStorage.setItem(key, value);
    else window.localStorage.removeItem(key);
  } catch {
    // No localStorage: the page opens the newest conversation instead.
  }
}

function recall(key) {
  try {
    return window.localStorage.getItem(key) || "";
  } catch {
    return "";
  }
}

/** Open the store and load every saved conversation; opens the one open last time. */
export async function loadSession() {
  const { store, error } = await openStore();
  state.store = store;
  if (error) showBanner("error", `${error.message}. Conversations last only until this tab closes.`);
  try {
    for (const conversation of await store.all()) state.conversations.set(conversation.id, conversation);
  } catch (err) {
    showBanner("error", err.message);
  }
  const last = state.conversations.get(recall(CURRENT_KEY));
  showConversation(last ?? draft());
}

function draft() {
  return newConversation(loadSettings(), loadDefaultModel());
}

export function isSaved(conversation) {
  return state.conversations.has(conversation.id);
}

/** Save a conversation (and list it, if it was a draft); storage errors go to the banner. */
export async function save(conversation, { touch = true } = {}) {
  if (state.deleted.has(conversation.id)) return false;
  if (touch) conversation.updatedAt = Date.now();
  state.conversations.set(conversation.id, conversation);
  if (conversation === state.current) remember(CURRENT_KEY, conversation.id);
  refreshSidebar();
  try {
    await state.store.put(conversation);
    return true;
  } catch (err) {
    showBanner("error", `${err.message}. This conversation is not saved; export it to keep it.`);
    return false;
  }
}

export function refreshSidebar() {
  renderSidebar([...state.conversations.values()], state.current?.id);
}

/** Make `conversation` the open one and draw it (the reply streaming now is stopped). */
export function showConversation(conversation) {
  if (state.active) state.active.controller.abort();
  state.current = conversation;
  remember(CURRENT_KEY, isSaved(conversation) ? conversation.id : "");
  renderConversation(conversation);
  refreshSidebar();
  document.dispatchEvent(new CustomEvent("conversation-shown"));
}

export function newChat() {
  showConversation(draft());
}

/** Delete a saved conversation; when it was open, a new draft takes its place. */
export async function deleteConversation(id) {
  const conversation = state.conversations.get(id);
  if (!conversation) return;
  state.conversations.delete(id);
  state.deleted.add(id);
  if (state.current?.id === id) newChat();
  else refreshSidebar();
  try {
    await state.store.delete(id);
  } catch (err) {
    state.deleted.delete(id);
    state.conversations.set(id, conversation);
    refreshSidebar();
    showBanner("error", err.message);
  }
}

/** Add imported conversations (same id: replaced); resolves with how many were saved. */
export async function addConversations(conversations) {
  for (const conversation of conversations) {
    state.deleted.delete(conversation.id);
    state.conversations.set(conversation.id, conversation);
  }
  refreshSidebar();
  if (state.current && conversations.some((c) => c.id === state.current.id)) {
    showConversation(state.conversations.get(state.current.id));
  }
  try {
    await state.store.putMany(conversations);
    return true;
  } catch (err) {
    showBanner("error", `${err.message}. The imported conversations last only until this tab closes.`);
    return false;
  }
}

/** The model the open conversation's requests name (see models.effectiveModel). */
export function currentModel() {
  return effectiveModel(state.current?.model, state.models);
}
