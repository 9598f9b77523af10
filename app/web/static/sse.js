// Server-Sent Events over fetch: a small incremental parser (the EventSource rules).
//
// Bytes arrive in arbitrary chunks: a line, a UTF-8 character or a "\r\n" pair can be split
// between two reads. The caller decodes with TextDecoder({stream: true}) and feeds text here;
// the parser keeps the unfinished tail until the next chunk completes it.

export class SSEParser {
  /** @param {(event: {event: string, data: string, id: string}) => void} onEvent */
  constructor(onEvent, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.buffer = "";
    this.dataLines = [];
    this.eventType = "";
    this.lastId = "";
  }

  /** Feed decoded text; complete lines are processed, the rest waits for more. */
  feed(text) {
    this.buffer += text;
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      let end;
      let next;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        // A lone "\r" at the very end may be the first half of "\r\n": wait for more.
        if (cr === this.buffer.length - 1) break;
        end = cr;
        next = this.buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      this.processLine(this.buffer.slice(start, end));
      start = next;
    }
    this.buffer = this.buffer.slice(start);
  }

  /** The stream ended: a last unterminated line still counts, then dispatch what is pending. */
  end() {
    if (this.buffer.length > 0) {
      const tail = this.buffer.endsWith("\r") ? this.buffer.slice(0, -1) : this.buffer;
      this.buffer = "";
      this.processLine(tail);
    }
    this.dispatch();
  }

  processLine(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1).trim());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.dataLines.push(value);
    else if (field === "event") this.eventType = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    // "retry" and unknown fields are ignored: fetch does not reconnect by itself.
  }

  dispatch() {
    if (this.dataLines.length === 0) {
      this.eventType = "";
      return;
    }
    const event = { event: this.eventType || "message", data: this.dataLines.join("\n"), id: this.lastId };
    this.dataLines = [];
    this.eventType = "";
    this.onEvent(event);
  }
}

/**
 * Read a fetch Response body as SSE, calling onEvent for each event and onChunk after each
 * network read (so the caller can render once per read rather than once per event).
 * Resolves when the body ends; rejects with AbortError when the fetch is aborted.
 */
export async function readEventStream(response, onEvent, { onComment, onChunk } = {}) {
  const parser = new SSEParser(onEvent, onComment);
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
      if (onChunk) onChunk();
    }
    parser.feed(decoder.decode());
    parser.end();
  } catch (err) {
    // A handler threw (an error event) or the read failed: drop the connection either way.
    await reader.cancel().catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
  }
}
