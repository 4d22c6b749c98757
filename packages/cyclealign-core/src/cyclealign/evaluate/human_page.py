"""The human-evaluation page: one self-contained HTML file, usable offline.

Both answers of an item sit side by side as "Answer A" and "Answer B" (which system
is which is in the key file only); the annotator picks A, B or tie per item and may
leave a comment.  Everything is rendered into the page, so it reads even without
JavaScript; the script only collects the choices, keeps them in the browser's local
storage (a reload loses nothing) and downloads them as JSON or CSV for
``cyclealign eval human import``.  No external resource is referenced.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

CHOICES = ("A", "B", "tie")

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:90em;padding:1em 1.5em;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:.5em 0;z-index:1}
header button{margin-right:.5em;padding:.3em .9em}
.item{border:1px solid #ccc;border-radius:6px;margin:1em 0;padding:.8em}
.item.done{border-color:#4a4}
.question{white-space:pre-wrap;background:#f4f4f4;padding:.5em;border-radius:4px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.6em 0}
.answer{white-space:pre-wrap;border:1px solid #ddd;border-radius:4px;padding:.5em}
.answer h3{margin:0 0 .3em 0;font-size:1em}
.choice label{margin-right:1.2em}
.comment{width:100%;box-sizing:border-box}
"""

SCRIPT = """
const sheet = document.body.dataset.sheet;
const storeKey = "cyclealign-human-" + sheet;
const items = Array.from(document.querySelectorAll(".item"));
function collect() {
  return items.map(el => {
    const picked = el.querySelector("input[type=radio]:checked");
    return {item: Number(el.dataset.item), choice: picked ? picked.value : "",
            comment: el.querySelector(".comment").value};
  });
}
function refresh() {
  const rows = collect();
  let done = 0;
  rows.forEach((r, i) => { items[i].classList.toggle("done", r.choice !== ""); if (r.choice) done++; });
  document.getElementById("progress").textContent = done + " / " + rows.length + " answered";
  try { localStorage.setItem(storeKey, JSON.stringify(rows)); } catch (e) {}
}
function restore() {
  let rows = null;
  try { rows = JSON.parse(localStorage.getItem(storeKey) || "null"); } catch (e) {}
  (rows || []).forEach(r => {
    const el = document.querySelector('.item[data-item="' + r.item + '"]');
    if (!el) return;
    const input = el.querySelector('input[value="' + r.choice + '"]');
    if (input) input.checked = true;
    el.querySelector(".comment").value = r.comment || "";
  });
}
function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], {type: type}));
  const a = document.createElement("a");
  a.href = url; a.download = name; document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
function cell(s) { return '"' + String(s).replace(/"/g, '""') + '"'; }
document.getElementById("save-json").addEventListener("click", () => {
  const data = {sheet: sheet, saved_at: new Date().toISOString(), items: collect()};
  download("filled-" + sheet + ".json", JSON.stringify(data, null, 1), "application/json");
});
document.getElementById("save-csv").addEventListener("click", () => {
  const lines = ["sheet,item,choice,comment"].concat(
    collect().map(r => [sheet, r.item, r.choice, r.comment].map(cell).join(",")));
  download("filled-" + sheet + ".csv", lines.join("\\r\\n") + "\\r\\n", "text/csv");
});
document.addEventListener("change", refresh);
document.addEventListener("input", refresh);
restore();
refresh();
"""


def render_page(sheet_id: str, items: Sequence[dict[str, Any]], title: str, instructions: str) -> str:
    """The page for ``items`` (each ``item``, ``question``, ``answer_A``, ``answer_B``), escaped throughout."""
    esc = html.escape
    blocks = []
    for it in items:
        n = int(it["item"])
        radios = "".join(
            f'<label><input type="radio" name="choice-{n}" value="{c}"> '
            f"{'A is better' if c == 'A' else 'B is better' if c == 'B' else 'tie'}</label>"
            for c in CHOICES
        )
        blocks.append(
            f'<section class="item" data-item="{n}" id="item-{n}"><h2>Item {n}</h2>'
            f'<div class="question">{esc(str(it["question"]))}</div>'
            f'<div class="pair"><div class="answer answer-a"><h3>Answer A</h3>{esc(str(it["answer_A"]))}</div>'
            f'<div class="answer answer-b"><h3>Answer B</h3>{esc(str(it["answer_B"]))}</div></div>'
            f'<div class="choice">{radios}</div>'
            f'<textarea class="comment" rows="1" placeholder="comment (optional)"></textarea></section>'
        )
    header = (
        f"<header><h1>{esc(title)}</h1><p>{esc(instructions)}</p>"
        '<button id="save-json" type="button">Download filled sheet (JSON)</button>'
        '<button id="save-csv" type="button">Download filled sheet (CSV)</button>'
        '<span id="progress"></span></header>'
    )
    script = SCRIPT.replace("</", "<\\/")  # the script holds no closing tag, whatever is edited into it
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head><body data-sheet='{esc(sheet_id, quote=True)}'>"
        + header
        + "\n".join(blocks)
        + f"<script>{script}</script></body></html>"
    )
