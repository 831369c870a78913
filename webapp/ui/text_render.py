"""How a pair's texts are shown: a markdown-ish renderer (escaped) and a word-level diff of chosen
against rejected whose marks travel through the renderer."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# --- text rendering: markdown-ish, escaped, with diff marks --------------------------------------------

# The diff marks travel through the renderer as private-use characters (removed from user text first)
# and become <ins>/<del> at the very end, split around every tag so they always nest.
INS_OPEN, INS_CLOSE, DEL_OPEN, DEL_CLOSE = "\ue000", "\ue001", "\ue002", "\ue003"
_SENTINELS = re.compile("[\ue000-\ue003]")
_MARK_OPEN = {INS_OPEN: '<ins class="diff">', DEL_OPEN: '<del class="diff">'}
_MARK_CLOSE = {INS_OPEN: "</ins>", DEL_OPEN: "</del>"}
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+#.-]*)")
_HEADING = re.compile(r"^([\ue000-\ue003]*)#{1,6}\s+")
_INLINE_CODE = re.compile(r"(`[^`\n]+`)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.S)
_TAG_OR_MARK = re.compile(r"(<[^>]*>|[\ue000-\ue003])")
_EMPTY_MARK = re.compile(r'<(ins|del) class="diff"></\1>')
# Words, single punctuation characters and runs of whitespace: what the diff compares.
_DIFF_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
MAX_DIFF_TOKENS = 40_000  # words, both sides together; longer responses are shown without a diff


def clean_text(text) -> str:
    return _SENTINELS.sub("\ufffd", str(text if text is not None else ""))


def _plain(line: str) -> str:
    return _SENTINELS.sub("", line)


def _inline(text: str) -> str:
    """Escape, then `code` and **bold** (never inside code)."""
    out = []
    for part in _INLINE_CODE.split(escape(text)):
        if len(part) > 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{part[1:-1]}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", part))
    return "".join(out)


def _place_marks(html: str) -> str:
    out: list[str] = []
    open_mark = None
    for part in _TAG_OR_MARK.split(html):
        if not part:
            continue
        if part in _MARK_OPEN:
            if open_mark:
                out.append(_MARK_CLOSE[open_mark])
            open_mark = part
            out.append(_MARK_OPEN[part])
        elif part in (INS_CLOSE, DEL_CLOSE):
            if open_mark:
                out.append(_MARK_CLOSE[open_mark])
                open_mark = None
        elif part.startswith("<") and open_mark:
            out.append(_MARK_CLOSE[open_mark] + part + _MARK_OPEN[open_mark])
        else:
            out.append(part)
    if open_mark:
        out.append(_MARK_CLOSE[open_mark])
    return _EMPTY_MARK.sub("", "".join(out))


def render_markdown(text: str) -> SafeString:
    """Paragraphs (blank-line separated; single newlines kept), # headings, **bold**, inline `code`
    and fenced ``` code blocks. Everything is HTML-escaped before any tag is added."""
    lines = str(text).replace("\r\n", "\n").split("\n")
    blocks: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(f"<p>{_inline(chr(10).join(para))}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(_plain(line))
        if fence:
            flush()
            marker, lang = fence.group(1), fence.group(2)
            code: list[str] = []
            i += 1
            while i < len(lines) and not _plain(lines[i]).strip().startswith(marker):
                code.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end)
            cls = f' class="language-{escape(lang)}"' if lang else ""
            blocks.append(f"<pre><code{cls}>{escape(chr(10).join(code))}</code></pre>")
            continue
        if not _plain(line).strip():
            flush()
        elif heading := _HEADING.match(line):
            flush()
            blocks.append(f'<p class="md-heading">{_inline(heading.group(1) + line[heading.end() :])}</p>')
        else:
            para.append(line)
        i += 1
    flush()
    return mark_safe(_place_marks("".join(blocks)))  # noqa: S308 (built from escaped text only)


def _wrap_changes(tokens: list[str], changed: list[bool], open_mark: str, close_mark: str) -> str:
    """Join tokens, wrapping runs of changed words (with the spaces between them, never a newline)."""
    out: list[str] = []
    in_run = False
    n = len(tokens)
    for i, token in enumerate(tokens):
        if token.isspace():
            if in_run:
                nxt = i + 1
                if "\n" in token or nxt >= n or not changed[nxt] or tokens[nxt].isspace():
                    out.append(close_mark)
                    in_run = False
            out.append(token)
        elif changed[i]:
            if not in_run:
                out.append(open_mark)
                in_run = True
            out.append(token)
        else:
            if in_run:
                out.append(close_mark)
                in_run = False
            out.append(token)
    if in_run:
        out.append(close_mark)
    return "".join(out)


def word_diff(chosen: str, rejected: str) -> tuple[str, str, dict | None]:
    """The two texts with the words only one of them has marked (chosen: inserted, rejected:
    deleted), and a summary; texts too long to diff come back unmarked with no summary.

    Words and punctuation are compared, whitespace is not; difflib's popular-token heuristic
    (autojunk) keeps long responses fast (20,000 words a side in well under a second)."""
    a, b = _DIFF_TOKEN.findall(chosen), _DIFF_TOKEN.findall(rejected)
    wa = [i for i, t in enumerate(a) if not t.isspace()]
    wb = [j for j, t in enumerate(b) if not t.isspace()]
    if len(wa) + len(wb) > MAX_DIFF_TOKENS:
        return chosen, rejected, None
    matcher = SequenceMatcher(None, [a[i] for i in wa], [b[j] for j in wb])
    changed_a, changed_b = [False] * len(a), [False] * len(b)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            for i in wa[i1:i2]:
                changed_a[i] = True
            for j in wb[j1:j2]:
                changed_b[j] = True
    summary = {
        "similarity": round(matcher.ratio() * 100),
        "chosen_only": sum(changed_a),
        "rejected_only": sum(changed_b),
    }
    return (
        _wrap_changes(a, changed_a, INS_OPEN, INS_CLOSE),
        _wrap_changes(b, changed_b, DEL_OPEN, DEL_CLOSE),
        summary,
    )
