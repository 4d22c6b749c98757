"""Human evaluation (Table 3): a blind sheet out, filled sheets (CSV and the page's JSON) back in, the order mapped
back; the page itself read as HTML and, when Chromium is installed, rendered by it."""

from __future__ import annotations

import csv
import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.infra.store import atomic_write_jsonl
from tests.support.browser import HEADLESS, require_browser

SUBSETS = ["harmless-base", "helpful-base"]
N = 12


def _answers(path: Path, tag: str, n: int = N) -> Path:
    rows = [
        {"id": str(i), "subset": SUBSETS[i % 2], "question": f"Question {i}?", "answer": f"{tag} answer {i}"}
        for i in range(n)
    ]
    rows[0]["answer"] = f"{tag} says <b>bold</b> & </script><script>alert(1)</script>"
    atomic_write_jsonl(path, rows)
    return path


def _intended(i: int) -> str:
    """The outcome for the first system an annotator means to give item id i."""
    return ("win", "tie", "lose")[i % 3]


def _export(tmp_path: Path, seed: int = 7, out: str = "human") -> Path:
    a, b = _answers(tmp_path / "a.jsonl", "alpha"), _answers(tmp_path / "b.jsonl", "beta")
    args = ["eval", "human", "export", str(a), str(b), "--name-a", "CycleAlign", "--name-b", "PRO"]
    result = CliRunner().invoke(app, [*args, "--seed", str(seed), "--out", str(tmp_path / out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    return tmp_path / out


def _fill(row: dict[str, str]) -> str:
    """What an annotator who wants ``_intended`` picks, reading only the sheet (alpha is the first system)."""
    i = int(row["question"].split()[1].rstrip("?"))
    want = _intended(i)
    if want == "tie":
        return "tie"
    alpha_side = "A" if "alpha" in row["answer_A"] else "B"
    return alpha_side if want == "win" else ("B" if alpha_side == "A" else "A")


def _expected_table() -> dict[str, list[float]]:
    out = {}
    for name, ids in [(s, [i for i in range(N) if SUBSETS[i % 2] == s]) for s in SUBSETS] + [("total", range(N))]:
        ids = list(ids)
        out[name] = [round(100 * sum(_intended(i) == o for i in ids) / len(ids), 1) for o in ("win", "tie", "lose")]
    return out


def _check_table(out_dir: Path, judged: int = N) -> None:
    with (out_dir / "table3_human.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["subset", "CycleAlign win %", "tie %", "PRO win %", "judged", "unanswered"]
    expected = _expected_table()
    for row in rows[1:]:
        assert [float(x) for x in row[1:4]] == expected[row[0]], row
    assert rows[-1][0] == "total" and rows[-1][4:] == [str(judged), str(N - judged)]


def test_csv_round_trip_maps_the_shown_order_back(tmp_path: Path) -> None:
    out = _export(tmp_path)
    with (out / "sheet.csv").open(newline="") as f:
        sheet = list(csv.DictReader(f))
    assert len(sheet) == N and set(sheet[0]) == {
        "sheet",
        "item",
        "question",
        "answer_A",
        "answer_B",
        "choice",
        "comment",
    }
    sides = ["A" if "alpha" in r["answer_A"] else "B" for r in sheet]
    assert 0 < sides.count("A") < N  # the side is randomised...
    assert [r["question"] for r in sheet] != [f"Question {i}?" for i in range(N)]  # ...and so is the order
    key = json.loads((out / "key.json").read_text())
    assert key["systems"] == ["CycleAlign", "PRO"] and [k["first_system_shown_as"] for k in key["items"]] == sides
    assert "CycleAlign" not in (out / "sheet.csv").read_text() + (out / "sheet.html").read_text()  # blind

    for r in sheet:
        r["choice"] = _fill(r).lower() if int(r["item"]) % 2 else _fill(r)  # case does not matter
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sheet[0]))
        writer.writeheader()
        writer.writerows(sheet)
    result = CliRunner().invoke(app, ["eval", "human", "import", str(filled), "--key", str(out / "key.json")])
    assert result.exit_code == 0, result.output
    _check_table(out)
    judgements = [json.loads(x) for x in (out / "human_judgements.jsonl").read_text().splitlines()]
    assert all(j["outcome"] == _intended(int(j["id"])) for j in judgements)

    again = _export(tmp_path, seed=7, out="again")
    assert (again / "sheet.csv").read_text() == (out / "sheet.csv").read_text()  # seeded
    other = _export(tmp_path, seed=8, out="other")
    assert (other / "sheet.csv").read_text() != (out / "sheet.csv").read_text()


def test_the_pages_json_round_trips_and_unanswered_items_are_counted(tmp_path: Path) -> None:
    out = _export(tmp_path)
    with (out / "sheet.csv").open(newline="") as f:
        sheet = list(csv.DictReader(f))
    saved = {
        "sheet": sheet[0]["sheet"],
        "saved_at": "2026-12-01T12:00:00Z",
        "items": [{"item": int(r["item"]), "choice": _fill(r), "comment": "ok"} for r in sheet],
    }
    saved["items"][-1]["choice"] = ""  # left blank on the page
    path = tmp_path / "filled.json"
    path.write_text(json.dumps(saved))
    result = CliRunner().invoke(app, ["eval", "human", "import", str(path), "--key", str(out / "key.json")])
    assert result.exit_code == 0, result.output
    assert "1 item(s) left unanswered" in result.output
    blank = int(sheet[-1]["question"].split()[1].rstrip("?"))
    judgements = [json.loads(x) for x in (out / "human_judgements.jsonl").read_text().splitlines()]
    assert [j["outcome"] for j in judgements if j["outcome"] is None] == [None]
    assert all(j["outcome"] == _intended(int(j["id"])) for j in judgements if int(j["id"]) != blank)
    with (out / "table3_human.csv").open(newline="") as f:
        total = list(csv.reader(f))[-1]
    assert total[4:] == [str(N - 1), "1"]

    # the page's CSV download (sheet,item,choice,comment) reads the same way
    page_csv = tmp_path / "page.csv"
    lines = ["sheet,item,choice,comment"] + [f'"{saved["sheet"]}","{r["item"]}","{_fill(r)}",""' for r in sheet]
    page_csv.write_text("\r\n".join(lines) + "\r\n")
    result = CliRunner().invoke(app, ["eval", "human", "import", str(page_csv), "--key", str(out / "key.json")])
    assert result.exit_code == 0, result.output
    _check_table(out)

    # two annotators' files at once: every item judged twice, the blank one once
    result = CliRunner().invoke(
        app, ["eval", "human", "import", str(path), str(page_csv), "--key", str(out / "key.json")]
    )
    assert result.exit_code == 0, result.output
    with (out / "table3_human.csv").open(newline="") as f:
        assert list(csv.reader(f))[-1][4:] == [str(2 * N - 1), "1"]


def test_bad_input_is_named(tmp_path: Path) -> None:
    a, b = _answers(tmp_path / "a.jsonl", "alpha"), _answers(tmp_path / "b.jsonl", "beta", n=N - 2)
    result = CliRunner().invoke(app, ["eval", "human", "export", str(a), str(b), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "do not answer the same prompts" in result.output and "'10', '11'" in result.output
    out = _export(tmp_path)
    key = str(out / "key.json")
    bad = tmp_path / "bad.csv"
    bad.write_text("item,choice\n1,A\n2,maybe\n")
    result = CliRunner().invoke(app, ["eval", "human", "import", str(bad), "--key", key])
    assert result.exit_code == 2 and "bad.csv:3: choice 'maybe' for item 2 is not A, B or tie" in result.output
    bad.write_text("item,choice\n1,A\n99,B\n")
    result = CliRunner().invoke(app, ["eval", "human", "import", str(bad), "--key", key])
    assert result.exit_code == 2 and "bad.csv:3: item 99 is not on sheet" in result.output
    bad.write_text("sheet,item,choice\nffffffffffff,1,A\n")
    result = CliRunner().invoke(app, ["eval", "human", "import", str(bad), "--key", key])
    assert result.exit_code == 2 and "filled for sheet ffffffffffff" in result.output


class _Page(HTMLParser):
    """What the page holds: items, their answer texts, radio choices, buttons, anything fetched from outside."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[int, dict[str, str]] = {}
        self.radios: dict[str, list[str]] = {}
        self.buttons: list[str] = []
        self.external: list[str] = []
        self.scripts = 0
        self._item: int | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for attr in ("src", "href"):
            if a.get(attr):
                self.external.append(a[attr])
        if tag == "link":
            self.external.append(str(a))
        if tag == "script":
            self.scripts += 1
        if tag == "section" and "item" in (a.get("class") or ""):
            self._item = int(a["data-item"])
            self.items[self._item] = {"A": "", "B": ""}
        if tag == "div" and (a.get("class") or "").startswith("answer answer-"):
            self._in = a["class"][-1].upper()
        if tag == "input" and a.get("type") == "radio":
            self.radios.setdefault(a["name"], []).append(a["value"])
        if tag == "button":
            self.buttons.append(a.get("id", ""))

    def handle_endtag(self, tag):
        if tag == "div" and self._in:
            self._in = None

    def handle_data(self, data):
        if self._in and self._item is not None:
            self.items[self._item][self._in] += data


def test_the_page_holds_both_answers_side_by_side_and_needs_nothing_outside(tmp_path: Path) -> None:
    out = _export(tmp_path)
    text = (out / "sheet.html").read_text()
    page = _Page()
    page.feed(text)
    with (out / "sheet.csv").open(newline="") as f:
        sheet = {int(r["item"]): r for r in csv.DictReader(f)}
    assert sorted(page.items) == sorted(sheet) and len(page.items) == N
    for n, shown in page.items.items():
        assert shown["A"] == "Answer A" + sheet[n]["answer_A"] and shown["B"] == "Answer B" + sheet[n]["answer_B"]
        assert page.radios[f"choice-{n}"] == ["A", "B", "tie"]
    assert page.external == [] and page.scripts == 1  # no resource from anywhere; the answers' <script> is text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in text
    assert page.buttons == ["save-json", "save-csv"]
    assert "grid-template-columns:1fr 1fr" in text and "new Blob(" in text and "a.download" in text
    assert "localStorage" in text


def test_chromium_renders_both_answers_and_runs_the_script(tmp_path: Path) -> None:
    chromium, _ = require_browser(driver=False)  # skipped without Chromium, but never under CI=true
    out = _export(tmp_path)
    dom = subprocess.run(
        [chromium, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (out / "sheet.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    with (out / "sheet.csv").open(newline="") as f:
        sheet = list(csv.DictReader(f))
    for r in sheet:
        for side in ("A", "B"):
            shown = r[f"answer_{side}"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            assert shown in dom
    assert f"0 / {N} answered" in dom  # the script ran to its end
