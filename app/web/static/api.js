// Talking to the server: the streaming chat route, the model card, health.
//
// Every failure becomes an ApiError with a `kind` the page can explain in plain words:
// auth (401), busy (429, with retryAfter seconds), loading (503), too_long (context length),
// bad_request (other 4xx), server (5xx), network (no answer), stream (an error event after
// the stream started) and aborted (the user pressed Stop).

import { readEventStream } from "./sse.js";

export class ApiError extends Error {
  constructor(kind, message, { status = 0, retryAfter = null, code = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
    this.code = code;
  }
}

function headers(apiKey, json) {
  const result = { Accept: json ? "application/json" : "text/event-stream" };
  if (json) result["Content-Type"] = "application/json";
  if (apiKey) result.Authorization = `Bearer ${apiKey}`;
  return result;
}

function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** The message of an OpenAI-style error body ({"error": {...}}) or FastAPI's {"detail"}. */
function errorFields(body) {
  const error = body && typeof body === "object" ? body.error ?? body : null;
  if (error && typeof error === "object") {
    const detail = typeof error.detail === "string" ? error.detail : null;
    return { message: error.message || detail || "", code: error.code ?? error.type ?? null };
  }
  return { message: typeof error === "string" ? error : "", code: null };
}

async function errorFromResponse(response) {
  let fields = { message: "", code: null };
  const text = await response.text().catch(() => "");
  try {
    fields = errorFields(JSON.parse(text));
  } catch {
    fields.message = text.slice(0, 300);
  }
  const { status } = response;
  const options = { status, code: fields.code, retryAfter: retryAfterSeconds(response) };
  const message = fields.message || `${status} ${response.statusText}`.trim();
  if (status === 401 || status === 403) return new ApiError("auth", message, options);
  if (status === 429) return new ApiError("busy", message, options);
  if (status === 503) return new ApiError("loading", message, options);
  if (fields.code === "context_length_exceeded") return new ApiError("too_long", message, options);
  if (status >= 500) return new ApiError("server", message, options);
  return new ApiError("bad_request", message, options);
}

async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw new ApiError("aborted", "Stopped.");
    throw new ApiError("network", "The server can't be reached. Is it still running?");
  }
}

/** GET a JSON document; throws ApiError on failure. */
export async function getJson(path, apiKey) {
  const response = await send(path, { headers: headers(apiKey, true), cache: "no-store" });
  if (!response.ok) throw await errorFromResponse(response);
  return response.json();
}

function handleEvent(data, callbacks, state) {
  if (data === "[DONE]") {
    state.done = true;
    return;
  }
  let chunk;
  try {
    chunk = JSON.parse(data);
  } catch {
    return; // not JSON: nothing this page understands
  }
  if (chunk && chunk.error) {
    const { message, code } = errorFields(chunk);
    throw new ApiError("stream", message || "The server stopped with an error.", { code });
  }
  const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : null;
  const delta = choice && choice.delta ? choice.delta.content : null;
  if (typeof delta === "string" && delta) callbacks.onDelta(delta);
  if (choice && choice.finish_reason) state.finishReason = choice.finish_reason;
  if (chunk.usage) state.usage = chunk.usage;
}

/**
 * POST a streaming chat completion and feed its text to callbacks.onDelta as it arrives;
 * callbacks.onChunk runs after each network read. Resolves with {finishReason, usage}.
 */
export async function streamChat(body, { apiKey, signal, onDelta, onChunk }) {
  const response = await send("/v1/chat/completions", {
    method: "POST",
    headers: headers(apiKey, true),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorFromResponse(response);
  const state = { done: false, finishReason: null, usage: null };
  try {
    await readEventStream(response, (event) => handleEvent(event.data, { onDelta }, state), { onChunk });
  } catch (err) {
    if (err instanceof ApiError) throw err;
    if (signal && signal.aborted) throw new ApiError("aborted", "Stopped.");
    throw new ApiError("network", "The connection was lost while the reply was streaming.");
  }
  if (!state.done && !state.finishReason) {
    throw new ApiError("network", "The stream ended before the reply was complete.");
  }
  return { finishReason: state.finishReason, usage: state.usage };
}
