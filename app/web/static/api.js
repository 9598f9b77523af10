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

function handleEvent(data, onDelta, state) {
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
  if (!chunk || typeof chunk !== "object") return;
  if (chunk.error) {
    const { message, code } = errorFields(chunk);
    throw new ApiError("stream", message || "The server stopped with an error.", { code });
  }
  const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : null;
  const delta = readDelta(choice && choice.delta);
  if (delta) onDelta(delta);
  if (choice && choice.finish_reason) state.finishReason = choice.finish_reason;
  if (chunk.usage && typeof chunk.usage === "object") state.usage = chunk.usage;
}

const str = (value) => (typeof value === "string" && value ? value : "");

/**
 * The parts of one OpenAI stream delta this page shows: answer text, reasoning text
 * (``reasoning_content`` as llama-server and vLLM send it, or ``reasoning``) and tool-call
 * fragments. Null when the delta carries none of them.
 */
export function readDelta(delta) {
  if (!delta || typeof delta !== "object") return null;
  const content = str(delta.content);
  const reasoning = str(delta.reasoning_content) || str(delta.reasoning);
  const toolCalls = Array.isArray(delta.tool_calls) ? delta.tool_calls.filter((c) => c && typeof c === "object") : [];
  if (!content && !reasoning && !toolCalls.length) return null;
  return { content, reasoning, toolCalls };
}

/**
 * Fold streamed tool-call fragments into whole calls: a fragment names its call by
 * ``index`` (or ``id``), the first carries the name, later ones append to the arguments.
 */
export function mergeToolCalls(calls, fragments) {
  for (const fragment of fragments) {
    const fn = fragment.function && typeof fragment.function === "object" ? fragment.function : {};
    let call = Number.isInteger(fragment.index) ? calls.find((c) => c.index === fragment.index) : null;
    if (!call && fragment.id) call = calls.find((c) => c.id === fragment.id);
    if (!call) {
      call = { index: Number.isInteger(fragment.index) ? fragment.index : calls.length, id: "", name: "", arguments: "" };
      calls.push(call);
    }
    if (str(fragment.id)) call.id = fragment.id;
    if (str(fn.name)) call.name += fn.name;
    if (typeof fn.arguments === "string") call.arguments += fn.arguments;
  }
  return calls;
}

/**
 * POST a streaming chat completion; each delta with something to show goes to
 * onDelta({content, reasoning, toolCalls}), and onChunk runs after each network read.
 * Resolves with {finishReason, usage}.
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
    await readEventStream(response, (event) => handleEvent(event.data, onDelta, state), { onChunk });
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
