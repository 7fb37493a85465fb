"""`pact inspect`: a static, self-contained HTML page for looking at evaluation episodes token by token.

    write_inspector("runs/eval/base/episodes_toolworld.jsonl", "runs/eval/base/inspect_toolworld.html")

Each episode is shown turn by turn with its tokens coloured by component: reasoning (`<think>`),
tool call (`<tool_call>`), answer (the rest of an assistant turn), tool response and template text
inserted by the environment (`generated_mask` 0), and the end-of-turn token. Rewards, step rewards and
metrics sit above each episode.

Given a model, its tokenizer and the tasks with their expert traces, every token of the completion is
also scored after the prompt-only context x (`prompt_ids(tok, task)`) and after the trace-conditioned
context [x; h] (`prompt_ids(tok, task, "full")`). Both log-probs and their difference are in each
token's hover title, and the "trace effect" view colours each sampled token by the difference: green
where the trace makes the model's own token more likely, red where it makes it less likely.

The page has no external assets and needs no server; all text from episodes is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from statistics import mean

from pact_cotrain.render import label_generated_text, prompt_ids

COMPONENT_NAMES = {
    "reasoning": "reasoning",
    "tool_call": "tool call",
    "answer": "answer",
    "tool_response": "tool response (inserted)",
    "template": "template / inserted",
    "eot": "end of turn",
}
DELTA_CLIP = 4.0  # nats; |delta| at or above this gets full colour

_TOOL_RESPONSE = re.compile(r"<tool_response>.*?(?:</tool_response>|$)", re.S)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#fafafa;color:#222}
header{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px}
h1{font-size:18px;margin:0 0 6px 0} h2{font-size:16px;margin:0}
main{padding:12px 16px}
.legend span.t{margin-right:6px;padding:1px 6px}
.controls{margin-top:6px;font-size:13px}
.controls button{margin-right:6px;font-size:13px;padding:2px 8px;cursor:pointer}
.controls button.on{background:#333;color:#fff}
.note{color:#555;font-size:13px}
.warn{color:#a40;font-size:13px}
div.metrics{display:flex;flex-wrap:wrap;gap:4px;margin:6px 0;font-size:12px}
div.metrics .kv{border:1px solid #ddd;border-radius:3px;padding:1px 6px;background:#fcfcfc}
table.summary{border-collapse:collapse;font-size:12px;margin:6px 0}
table.summary td,table.summary th{border:1px solid #ddd;padding:2px 6px;text-align:left}
details.episode{background:#fff;border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:6px 10px}
details.episode>summary{cursor:pointer;font-weight:600}
.msg{margin:6px 0;border-left:4px solid #ccc;padding:2px 8px}
.msg .role{font-size:11px;font-weight:700;text-transform:uppercase;color:#666}
.msg.system{border-color:#999}.msg.user{border-color:#5a8}.msg.assistant{border-color:#58c}.msg.env{border-color:#c95}
.text{white-space:pre-wrap;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
 line-height:1.55;word-break:break-word}
.t{background:var(--cb);border-radius:2px}
.c-reasoning{--cb:#dbe8ff;--cu:#3b7ddd}
.c-tool_call{--cb:#ffe1bf;--cu:#e08a1e}
.c-answer{--cb:#d9f5d3;--cu:#3a9a3a}
.c-tool_response{--cb:#ece0f5;--cu:#8a55b5}
.c-template{--cb:#eeeeee;--cu:#999999}
.c-eot{--cb:#cccccc;--cu:#555555}
.c-plain{--cb:transparent;--cu:transparent}
.nl{color:#bbb}
body.delta .t{background:var(--db,transparent);box-shadow:inset 0 -3px 0 var(--cu)}
.t:hover{outline:1px solid #333}
.scale{display:inline-block;width:160px;height:10px;vertical-align:middle;
 background:linear-gradient(to right,rgba(220,40,40,.85),rgba(255,255,255,0),rgba(0,170,60,.85))}
"""

_JS = """
function setMode(m){
  document.body.classList.toggle('delta', m==='delta');
  document.querySelectorAll('button[data-mode]').forEach(function(b){b.classList.toggle('on', b.dataset.mode===m);});
}
window.addEventListener('DOMContentLoaded',function(){
  if(location.hash==='#delta'&&document.querySelector('button[data-mode="delta"]'))setMode('delta');
});
function setOpen(open){document.querySelectorAll('details.episode').forEach(function(d){d.open=open;});}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _load_records(path: str, limit: int | None) -> tuple[list[dict], int]:
    records, total = [], 0
    with open(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            total += 1
            if limit is None or len(records) < limit:
                records.append(json.loads(line))
    return records, total


def _tasks_by_id(tasks) -> dict:
    if tasks is None:
        return {}
    if isinstance(tasks, (str, Path)):
        from pact_cotrain.data.trace_format import load_tasks

        tasks = load_tasks(str(tasks))
    if isinstance(tasks, dict):
        return dict(tasks)
    return {t.id: t for t in tasks}


def _pieces(record: dict, tokenizer) -> list[str] | None:
    ids = record.get("completion_ids")
    if ids is None:
        return None
    if tokenizer is not None:
        return tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False) if ids else []
    pieces = record.get("completion_tokens")
    return pieces if pieces is not None and len(pieces) == len(ids) else None


def _label_by_offset(pieces: list[str], spans: list[tuple[int, int, str]], default: str) -> list[str]:
    labels, offset = [], 0
    for piece in pieces:
        end = offset + max(len(piece), 1)
        hit = next((lab for s, e, lab in spans if s < end and e > offset), default)
        labels.append(hit)
        offset += len(piece)
    return labels


def token_components(record: dict, pieces: list[str]) -> list[str]:
    """A component per completion token: assistant turns by `label_generated_text` (the end-of-turn
    token as 'eot'), inserted runs as 'tool_response' inside <tool_response> elements or a tool
    message's content, else 'template'."""
    n = len(pieces)
    labels = ["template"] * n
    mask = record.get("generated_mask") or [1] * n
    eos = record.get("eos_token_id")
    ids = record.get("completion_ids") or []
    spans = [tuple(s) for s in record.get("turn_spans") or []]
    if not spans:  # no turn boundaries: runs of generated tokens are the turns
        i = 0
        while i < n:
            if mask[i]:
                j = i
                while j < n and mask[j]:
                    j += 1
                spans.append((i, j))
                i = j
            else:
                i += 1
    for start, end in spans:
        turn = pieces[start:end]
        body = turn[:-1] if end > start and eos is not None and ids[end - 1] == eos else turn
        labels[start : start + len(body)] = _label_by_offset(body, label_generated_text("".join(body)), "answer")
        if len(body) < len(turn):
            labels[end - 1] = "eot"
    tool_contents = [m.get("content", "") for m in record.get("messages", []) if m.get("role") == "tool"]
    i = 0
    while i < n:
        if mask[i]:
            i += 1
            continue
        j = i
        while j < n and not mask[j]:
            j += 1
        text = "".join(pieces[i:j])
        found = [(m.start(), m.end(), "tool_response") for m in _TOOL_RESPONSE.finditer(text)]
        for content in tool_contents:
            at = text.find(content) if content else -1
            if at >= 0:
                found.append((at, at + len(content), "tool_response"))
        labels[i:j] = _label_by_offset(pieces[i:j], sorted(found), "template")
        i = j
    return labels


def trace_logps(model, tokenizer, task, completion_ids: list[int], trace_view: str = "full"):
    """Per-token log-probs of `completion_ids` after the prompt-only and the trace-conditioned context."""
    import torch

    from pact_cotrain.training.scoring import completion_logps

    plain, conditioned = prompt_ids(tokenizer, task), prompt_ids(tokenizer, task, trace_view)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logp, _, _ = completion_logps(model, [plain, conditioned], [completion_ids, completion_ids], pad)
    model.train(was_training)
    n = len(completion_ids)
    return logp[0, :n].float().cpu().tolist(), logp[1, :n].float().cpu().tolist(), plain


def _delta_colour(delta: float) -> str:
    alpha = min(abs(delta) / DELTA_CLIP, 1.0) * 0.85
    rgb = "0,170,60" if delta >= 0 else "220,40,40"
    return f"rgba({rgb},{alpha:.2f})"


def _token_html(piece: str, label: str, title: str, delta: float | None) -> str:
    text = _e(piece).replace("\n", '<span class="nl">\u21b5</span>\n')
    if piece == "":
        text = '<span class="nl">\u2205</span>'
    style = f' style="--db:{_delta_colour(delta)}"' if delta is not None else ""
    return f'<span class="t c-{label}" title="{_e(title)}"{style}>{text}</span>'


def _spans_html(text: str, spans: list[tuple[int, int, str]]) -> str:
    return "".join(f'<span class="t c-{lab}" title="{_e(COMPONENT_NAMES.get(lab, lab))}">{_e(text[s:e])}</span>'
                   for s, e, lab in spans)


def _message_html(role: str, css: str, body: str, extra: str = "") -> str:
    return (f'<div class="msg {css}"><div class="role">{_e(role)}{(" &middot; " + extra) if extra else ""}</div>'
            f'<div class="text">{body}</div></div>')


def _metrics_table(record: dict, deltas: dict | None) -> str:
    cells = [("reward", record.get("reward")), ("stop", record.get("stop_reason"))]
    cells += [(k, v) for k, v in (record.get("metrics") or {}).items()]
    if record.get("step_rewards"):
        cells.append(("step rewards", ", ".join(f"{r:.3g}" for r in record["step_rewards"])))
    for k, v in (record.get("component_tokens") or {}).items():
        cells.append((f"tokens {k}", v))
    if deltas:
        for k, v in deltas.items():
            cells.append((k, v))

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    chips = "".join(f'<span class="kv"><b>{_e(k)}</b> {_e(fmt(v))}</span>' for k, v in cells)
    return f'<div class="metrics">{chips}</div>'


def _episode_html(index: int, record: dict, pieces, scores, task, warn: str) -> tuple[str, dict]:
    messages = record.get("messages") or []
    first_assistant = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    parts = []
    for msg in messages[:first_assistant]:
        parts.append(_message_html(msg.get("role", "?"), msg.get("role", ""), _e(msg.get("content", ""))))
    if task is not None and task.trace:
        from pact_cotrain.render import render_trace_block

        parts.append('<details><summary class="note">expert trace (not in the rollout context)</summary>'
                     f'<div class="text">{_e(render_trace_block(task.trace, "full"))}</div></details>')
    if warn:
        parts.append(f'<div class="warn">{_e(warn)}</div>')

    summary_stats: dict = {}
    if pieces is not None:
        labels = token_components(record, pieces)
        ids = record.get("completion_ids") or []
        mask = record.get("generated_mask") or [1] * len(pieces)
        sampled = record.get("logprobs") or []
        plain, cond = scores if scores else (None, None)
        deltas_by_comp: dict[str, list[float]] = {}

        def token(i: int) -> str:
            title = f"#{i} {COMPONENT_NAMES.get(labels[i], labels[i])} id={ids[i] if i < len(ids) else '?'}"
            delta = None
            if mask[i] and i < len(sampled):
                title += f"\nsampled log p = {sampled[i]:.3f}"
            if plain is not None:
                delta = cond[i] - plain[i]
                title += (f"\nlog p(tok | x) = {plain[i]:.3f}\nlog p(tok | x, h) = {cond[i]:.3f}"
                          f"\ndelta = {delta:+.3f}")
                if mask[i]:
                    deltas_by_comp.setdefault(labels[i], []).append(delta)
                else:
                    delta = None  # inserted tokens: not the model's choice
            return _token_html(pieces[i], labels[i], title, delta)

        turn_spans = [tuple(s) for s in record.get("turn_spans") or []] or [(0, len(pieces))]
        step_rewards = record.get("step_rewards") or []
        for t, (start, end) in enumerate(turn_spans):
            extra = f"step reward {step_rewards[t]:.3g}" if t < len(step_rewards) else ""
            parts.append(_message_html(f"assistant turn {t + 1}", "assistant",
                                       "".join(token(i) for i in range(start, end)), extra))
            stop = turn_spans[t + 1][0] if t + 1 < len(turn_spans) else len(pieces)
            if stop > end:
                parts.append(_message_html("environment (inserted)", "env",
                                           "".join(token(i) for i in range(end, stop))))
        if plain is not None:
            all_deltas = [d for ds in deltas_by_comp.values() for d in ds]
            if all_deltas:
                summary_stats["mean delta (sampled)"] = mean(all_deltas)
            for comp, ds in deltas_by_comp.items():
                summary_stats[f"mean delta {comp}"] = mean(ds)
    else:  # no token ids: the decoded conversation, labelled by characters
        for msg in messages[first_assistant:]:
            content = msg.get("content", "")
            if msg.get("role") == "assistant":
                body = _spans_html(content, label_generated_text(content))
                parts.append(_message_html("assistant", "assistant", body))
            else:
                parts.append(_message_html(msg.get("role", "?"), "env",
                                           _spans_html(content, [(0, len(content), "tool_response")])))

    metrics = record.get("metrics") or {}
    bench = f" [{record['benchmark']}]" if record.get("benchmark") else ""
    reward = float(record.get("reward", metrics.get("reward", 0.0)) or 0.0)
    head = " &middot; ".join(_e(x) for x in (f"#{index} {record.get('task_id', '?')}{bench}", f"reward {reward:.3f}",
                                              record.get("stop_reason", "")))
    body = (f'<details class="episode" id="ep{index}"{" open" if index == 0 else ""}>'
            f"<summary>{head}</summary>"
            f"{_metrics_table(record, summary_stats)}{''.join(parts)}</details>")
    return body, summary_stats


def write_inspector(episodes_path: str, out_html: str, model=None, tokenizer=None, tasks=None,
                    limit: int | None = 50, trace_view: str = "full") -> str:
    """Write a self-contained HTML page for the first `limit` episodes of `episodes_path` (a JSONL
    written by `run_eval`); score tokens with and without the expert trace when `model`, `tokenizer`
    and `tasks` (Tasks with traces: a list, a dict by id, or a task JSONL path) are given. Returns the
    path written."""
    records, total = _load_records(episodes_path, limit)
    by_id = _tasks_by_id(tasks)
    scoring = model is not None and tokenizer is not None
    episodes_html, rows, n_scored = [], [], 0
    for index, record in enumerate(records):
        pieces = _pieces(record, tokenizer)
        task = by_id.get(record.get("task_id"))
        scores, warn = None, ""
        if scoring and pieces is not None:
            if task is None or not task.trace:
                warn = "no task with an expert trace for this episode: log-probs not computed"
            else:
                plain, cond, ctx = trace_logps(model, tokenizer, task, record["completion_ids"], trace_view)
                scores = (plain, cond)
                n_scored += 1
                if record.get("prompt_ids") is not None and list(record["prompt_ids"]) != list(ctx):
                    warn = ("the rollout's recorded context differs from prompt_ids(task): log-probs are "
                            "computed after the re-rendered prompt")
        body, stats = _episode_html(index, record, pieces, scores, task, warn)
        episodes_html.append(body)
        metrics = record.get("metrics") or {}
        key_metrics = ", ".join(f"{k} {v:.3g}" for k, v in list(metrics.items())[:5] if isinstance(v, (int, float)))
        delta = stats.get("mean delta (sampled)")
        rows.append(f'<tr><td><a href="#ep{index}">{index}</a></td><td>{_e(record.get("task_id", "?"))}</td>'
                    f'<td>{_e(record.get("stop_reason", ""))}</td><td>{_e(key_metrics)}</td>'
                    f'<td>{"" if delta is None else f"{delta:+.3f}"}</td></tr>')

    legend = "".join(f'<span class="t c-{k}">{_e(v)}</span>' for k, v in COMPONENT_NAMES.items())
    controls = ('<button data-mode="components" class="on" onclick="setMode(\'components\')">components</button>'
                + ('<button data-mode="delta" onclick="setMode(\'delta\')">trace effect</button>' if n_scored else "")
                + '<button onclick="setOpen(true)">expand all</button>'
                + '<button onclick="setOpen(false)">collapse all</button>')
    scale = (f'<span class="note"> trace effect: log p(tok|x,h) &minus; log p(tok|x) &nbsp;'
             f'&minus;{DELTA_CLIP:g} <span class="scale"></span> +{DELTA_CLIP:g} nats; '
             f'scored {n_scored} of {len(records)} episodes; underline = component</span>') if n_scored else \
        '<span class="note"> (no model given: log-probs under the trace are not shown)</span>'
    title = f"PACT inspector: {Path(episodes_path).name}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><header><h1>{_e(title)}</h1>
<div class="note">{len(records)} of {total} episodes shown; hover a token for its component, ids and log-probs.</div>
<div class="legend">{legend}</div><div class="controls">{controls}{scale}</div></header>
<main><table class="summary"><tr><th>#</th><th>task</th><th>stop</th><th>metrics</th><th>mean delta</th></tr>
{''.join(rows)}</table>
{''.join(episodes_html)}</main><script>{_JS}</script></body></html>
"""
    Path(out_html).parent.mkdir(parents=True, exist_ok=True)
    Path(out_html).write_text(page, encoding="utf-8")
    return str(out_html)
