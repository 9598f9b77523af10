"""The page's Markdown renderer, SSE parser and reply figures, run in a real headless Chromium.

No server: Playwright answers requests for a made-up origin from app/web/static, and the
tests import the ES modules there and call them directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import chromium_context, static_route_handler

pytestmark = pytest.mark.browser

ORIGIN = "http://cria.test"

# Turns a rendered fragment into a compact tree: ["tag", {attrs}, ...children] or "text".
SERIALIZE_JS = """
window.tree = (node) => {
  if (node.nodeType === Node.TEXT_NODE) return node.textContent;
  const attrs = {};
  for (const a of node.attributes || []) attrs[a.name] = a.value;
  const kids = [...node.childNodes].map(window.tree);
  if (node.nodeType === Node.DOCUMENT_FRAGMENT_NODE) return kids;
  return [node.nodeName.toLowerCase(), attrs, ...kids];
};
"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with chromium_context() as context:
        context.route(f"{ORIGIN}/**", static_route_handler())
        page = context.new_page()
        page.goto(f"{ORIGIN}/harness.html")
        page.add_script_tag(content=SERIALIZE_JS)
        page.add_script_tag(
            type="module",
            content="import * as md from '/static/markdown.js';"
            "import * as sse from '/static/sse.js';"
            "import * as fmt from '/static/format.js';"
            "window.md = md; window.sse = sse; window.fmt = fmt;",
        )
        page.wait_for_function("window.md && window.sse && window.fmt")
        yield page


def render(page: Any, text: str) -> Any:
    return page.evaluate("(t) => window.tree(window.md.renderMarkdown(t))", text)


def render_html(page: Any, text: str) -> str:
    """The rendered DOM as HTML (serialised by the browser, so text is escaped)."""
    return page.evaluate(
        "(t) => { const d = document.createElement('div');"
        " d.append(window.md.renderMarkdown(t)); return d.innerHTML; }",
        text,
    )


def tags(tree: Any) -> list[str]:
    """Every element name in a serialised tree, depth first."""
    found: list[str] = []
    if isinstance(tree, list):
        if tree and isinstance(tree[0], str) and len(tree) >= 2 and isinstance(tree[1], dict):
            found.append(tree[0])
            tree = tree[2:]
        for child in tree:
            found.extend(tags(child))
    return found


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>window.__pwned = 1</script>",
        '<img src=x onerror="window.__pwned = 2">',
        "<svg onload=window.__pwned=3>",
        "**<b onmouseover=alert(1)>bold</b>**",
        "```html\n<script>window.__pwned = 4</script>\n```",
        "[click](javascript:window.__pwned=5)",
        "<iframe src='javascript:window.__pwned=6'></iframe>",
    ],
)
def test_html_in_the_text_stays_text(page: Any, hostile: str) -> None:
    html = page.evaluate(
        "(t) => { const d = document.createElement('div'); document.body.append(d);"
        " d.append(window.md.renderMarkdown(t)); return d.textContent; }",
        hostile,
    )
    # The angle brackets are visible text, never elements.
    for needle in ("<script", "<img", "<svg", "<b ", "<iframe"):
        if needle in hostile:
            assert needle in html
    elements = tags(render(page, hostile))
    assert elements  # it did render (a paragraph or a code block)
    assert not {"script", "img", "svg", "iframe", "b", "a"} & set(elements)
    page.wait_for_timeout(50)
    assert page.evaluate("window.__pwned") is None


def test_paragraphs_headings_and_inline_styles(page: Any) -> None:
    html = render_html(
        page, "# Title\n\nSome **bold**, *italic*, `a < b` and ~~gone~~.\nNext line.\n\nAnother"
    )
    assert html == (
        "<h1>Title</h1>"
        "<p>Some <strong>bold</strong>, <em>italic</em>, <code>a &lt; b</code> and <del>gone</del>."
        "<br>Next line.</p>"
        "<p>Another</p>"
    )


def test_snake_case_and_lone_stars_are_not_emphasis(page: Any) -> None:
    html = render_html(page, "call my_function_name with 2 * 3 * 4 and **unclosed")
    assert html == "<p>call my_function_name with 2 * 3 * 4 and **unclosed</p>"


def test_nested_lists(page: Any) -> None:
    html = render_html(page, "1. one\n2. two\n   - a\n   - b\n3. three\n\n- x\n- y")
    assert html == (
        "<ol><li>one</li><li>two<ul><li>a</li><li>b</li></ul></li><li>three</li></ol>"
        "<ul><li>x</li><li>y</li></ul>"
    )


def test_fenced_code_block_has_language_and_copy_button(page: Any) -> None:
    tree = render(page, "Look:\n\n```python\nif a < b:\n    print('<hi>')\n```\nafter")
    block = tree[1]
    assert block[0] == "div"
    assert block[1] == {"class": "code-block"}
    head, pre = block[2], block[3]
    assert head[2] == ["span", {"class": "code-lang"}, "python"]
    assert head[3][0] == "button"
    assert head[3][-1] == "Copy"
    assert pre == ["pre", {}, ["code", {}, "if a < b:\n    print('<hi>')"]]
    assert tree[2] == ["p", {}, "after"]


def test_unclosed_fence_while_streaming_is_code_so_far(page: Any) -> None:
    tree = render(page, "```js\nconst x = 1;")
    assert tree[0][3] == ["pre", {}, ["code", {}, "const x = 1;"]]


def test_only_http_links_become_anchors(page: Any) -> None:
    tree = render(page, "[docs](https://example.com/a?b=1) and [bad](data:text/html,hi)")
    anchor = tree[0][2]
    assert anchor == [
        "a",
        {
            "href": "https://example.com/a?b=1",
            "target": "_blank",
            "rel": "noopener noreferrer nofollow",
        },
        "docs",
    ]
    assert "a" not in tags(tree[0][3:])
    assert tree[0][3] == " and [bad](data:text/html,hi)"


def test_table_blockquote_and_rule(page: Any) -> None:
    html = render_html(page, "| a | b |\n|---|--:|\n| 1 | 2 |\n\n> quoted\n\n---")
    assert html == (
        '<div class="table-wrap"><table><thead><tr><th>a</th><th style="text-align: right;">b</th>'
        '</tr></thead><tbody><tr><td>1</td><td style="text-align: right;">2</td></tr></tbody>'
        "</table></div><blockquote><p>quoted</p></blockquote><hr>"
    )


SSE_STREAM = (
    ": ping\n\n"
    'data: {"a":1}\r\n\r\n'
    "event: note\ndata: line one\ndata: line two\n\n"
    "data:no-space\rdata: é ünïcödé ✓\r\r"
    "data: [DONE]\n\n"
)
SSE_EVENTS = [
    {"event": "message", "data": '{"a":1}'},
    {"event": "note", "data": "line one\nline two"},
    {"event": "message", "data": "no-space\né ünïcödé ✓"},
    {"event": "message", "data": "[DONE]"},
]

PARSE_CHUNKS_JS = """
async (chunks) => {
  const events = [];
  const comments = [];
  const bytes = chunks.map((c) => new Uint8Array(c));
  const body = new ReadableStream({
    start(ctl) { bytes.forEach((b) => ctl.enqueue(b)); ctl.close(); },
  });
  await window.sse.readEventStream(new Response(body),
    (e) => events.push({ event: e.event, data: e.data }), { onComment: (c) => comments.push(c) });
  return { events, comments };
}
"""


def test_sse_parser_in_one_chunk(page: Any) -> None:
    result = page.evaluate(PARSE_CHUNKS_JS, [list(SSE_STREAM.encode())])
    assert result == {"events": SSE_EVENTS, "comments": ["ping"]}


def test_sse_parser_at_every_split_point(page: Any) -> None:
    """Lines, CRLF pairs and UTF-8 characters split across reads still parse the same."""
    data = SSE_STREAM.encode()
    splits = [[list(data[:i]), list(data[i:])] for i in range(1, len(data))]
    results = page.evaluate(f"async (all) => Promise.all(all.map({PARSE_CHUNKS_JS}))", splits)
    for i, result in enumerate(results):
        assert result["events"] == SSE_EVENTS, f"split at byte {i + 1}"


def test_sse_parser_byte_by_byte_and_unterminated_tail(page: Any) -> None:
    data = (SSE_STREAM + "data: tail without blank line").encode()
    result = page.evaluate(PARSE_CHUNKS_JS, [[b] for b in data])
    assert result["events"] == [
        *SSE_EVENTS,
        {"event": "message", "data": "tail without blank line"},
    ]


FIGURES_JS = "([result, timing, now]) => window.fmt.replyFigures(result, timing, now)"


def test_reply_figures_from_usage_and_timing(page: Any) -> None:
    result = {"usage": {"completion_tokens": 41}, "finishReason": "length"}
    timing = {"start": 0, "first": 500, "last": 4500, "pieces": 40}
    assert page.evaluate(FIGURES_JS, [result, timing, 4600]) == (
        "41 tokens · 10.0 tok/s · first token 0.50 s · hit the max tokens limit"
    )


def test_reply_figures_without_usage_count_pieces(page: Any) -> None:
    timing = {"start": 0, "first": 200, "last": 200, "pieces": 1}
    assert page.evaluate(FIGURES_JS, [{}, timing, 1000]) == (
        "~1 token · 1.0 tok/s · first token 0.20 s"
    )
