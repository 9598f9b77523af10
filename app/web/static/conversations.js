// Conversations as data: creating them, titling them, the history a request sends, and the
// JSON export/import format. Pure functions (no DOM), so they can be tested in isolation.
//
// A conversation: {id, title, createdAt, updatedAt, model, settings, messages}; a message:
// {role: "user" | "assistant", content, ...}. Assistant messages may also carry reasoning,
// reasoningTokens, toolCalls [{id, name, arguments}], meta (the figures line) and state
// (done, stopped, error). A user message whose request failed before any reply carries
// failed: true and is left out of later requests until it is tried again.

import { cleanSettings } from "./settings.js";

export const EXPORT_FORMAT = "cria-chat";
export const EXPORT_VERSION = 1;
const TITLE_LENGTH = 60;
const MAX_MESSAGES = 10000;
const MAX_TEXT = 2_000_000;

function randomId() {
  // crypto.randomUUID needs a secure context; a LAN address over http is not one.
  if (window.crypto && typeof window.crypto.randomUUID === "function" && window.isSecureContext) {
    return window.crypto.randomUUID();
  }
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function newConversation(settings, model) {
  const now = Date.now();
  return {
    id: randomId(),
    title: "New chat",
    createdAt: now,
    updatedAt: now,
    model: model || "",
    settings: cleanSettings(settings),
    messages: [],
  };
}

/** A title from the first line of a message: whitespace collapsed, at most 60 characters. */
export function titleFrom(text) {
  const line = String(text ?? "").trim().split("\n")[0].replace(/\s+/g, " ").trim();
  if (!line) return "New chat";
  return line.length > TITLE_LENGTH ? `${line.slice(0, TITLE_LENGTH - 1).trimEnd()}…` : line;
}

/** The messages a chat request sends: the system prompt, then every turn not marked failed. */
export function requestMessages(conversation) {
  const messages = [];
  const prompt = conversation.settings.systemPrompt;
  if (prompt.trim()) messages.push({ role: "system", content: prompt });
  for (const message of conversation.messages) {
    if (message.failed) continue;
    messages.push({ role: message.role, content: message.content });
  }
  return messages;
}

/** The chat request body for a conversation (streamed, with usage in the last chunk). */
export function requestBody(conversation, model) {
  const { settings } = conversation;
  const body = {
    messages: requestMessages(conversation),
    stream: true,
    stream_options: { include_usage: true },
    temperature: settings.temperature,
  };
  if (model) body.model = model;
  if (settings.maxTokens !== null) body.max_tokens = settings.maxTokens;
  return body;
}

/** Conversations whose title contains every word of the query (any case), newest first. */
export function searchConversations(conversations, query) {
  const words = String(query ?? "").toLowerCase().split(/\s+/).filter(Boolean);
  return conversations
    .filter((c) => words.every((word) => c.title.toLowerCase().includes(word)))
    .sort((a, b) => b.updatedAt - a.updatedAt);
}

// ---------------------------------------------------------------------------------------
// Export and import

export function exportDocument(conversations) {
  return {
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    exportedAt: new Date().toISOString(),
    conversations: conversations.map((c) => structuredClone(c)),
  };
}

export function exportFileName(conversations) {
  const day = new Date().toISOString().slice(0, 10);
  if (conversations.length !== 1) return `cria-chats-${day}.json`;
  const slug = conversations[0].title.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-|-$/g, "");
  return `cria-chat-${slug.slice(0, 40) || "conversation"}-${day}.json`;
}

const text = (value) => (typeof value === "string" ? value.slice(0, MAX_TEXT) : "");
const time = (value, fallback) => (Number.isFinite(value) && value > 0 ? value : fallback);

function cleanToolCalls(raw) {
  if (!Array.isArray(raw)) return undefined;
  const calls = raw
    .filter((c) => c && typeof c === "object")
    .map((c) => ({ id: text(c.id), name: text(c.name), arguments: text(c.arguments) }));
  return calls.length ? calls : undefined;
}

function cleanMessage(raw) {
  if (!raw || typeof raw !== "object" || !["user", "assistant"].includes(raw.role)) return null;
  const message = { role: raw.role, content: text(raw.content) };
  if (raw.role === "user") {
    if (raw.failed === true) message.failed = true;
    return message;
  }
  if (raw.reasoning) message.reasoning = text(raw.reasoning);
  if (Number.isInteger(raw.reasoningTokens) && raw.reasoningTokens >= 0) message.reasoningTokens = raw.reasoningTokens;
  const toolCalls = cleanToolCalls(raw.toolCalls);
  if (toolCalls) message.toolCalls = toolCalls;
  if (raw.meta) message.meta = text(raw.meta).slice(0, 500);
  message.state = ["done", "stopped", "error"].includes(raw.state) ? raw.state : "done";
  if (raw.model) message.model = text(raw.model).slice(0, 300);
  return message;
}

/** A conversation from untrusted JSON, with every field checked; null if it isn't one. */
export function cleanConversation(raw) {
  if (!raw || typeof raw !== "object" || !Array.isArray(raw.messages)) return null;
  const id = typeof raw.id === "string" && /^[\w-]{1,64}$/.test(raw.id) ? raw.id : randomId();
  const now = Date.now();
  const messages = raw.messages.slice(0, MAX_MESSAGES).map(cleanMessage).filter(Boolean);
  const createdAt = time(raw.createdAt, now);
  return {
    id,
    title: titleFrom(text(raw.title)) || "New chat",
    createdAt,
    updatedAt: time(raw.updatedAt, createdAt),
    model: text(raw.model).slice(0, 300),
    settings: cleanSettings(raw.settings),
    messages,
  };
}

/**
 * Parse an export file: this page's {format, conversations} document, a bare list of
 * conversations or one conversation. Returns {conversations, skipped}; throws an Error
 * with a readable message when the file is not JSON or holds no conversation at all.
 */
export function parseImport(source) {
  let data;
  try {
    data = JSON.parse(source);
  } catch {
    throw new Error("The file is not JSON.");
  }
  let items;
  if (Array.isArray(data)) items = data;
  else if (data && typeof data === "object" && Array.isArray(data.conversations)) items = data.conversations;
  else if (data && typeof data === "object" && Array.isArray(data.messages)) items = [data];
  else throw new Error("The file holds no conversations (expected a CRIA chat export).");
  const conversations = items.map(cleanConversation).filter(Boolean);
  if (!conversations.length && items.length) throw new Error("None of the conversations in the file could be read.");
  return { conversations, skipped: items.length - conversations.length };
}
