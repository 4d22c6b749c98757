"""The human-evaluation page in a real headless Chromium: choose, reload, download, import (Table 3).

An annotator's whole round trip, clicked through selenium: A, B and tie on different
items and a comment, a reload that keeps them (the page's local storage), both
downloads, and `eval human import` on each downloaded file.  A screenshot of the
filled page is kept (``$CYCLEALIGN_TEST_ARTIFACTS`` or the test's tmp folder).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cyclealign.cli.main import app
from cyclealign.infra.store import atomic_write_jsonl
from tests.support.browser import artifact_path, headless_chrome, require_browser
from tests.support.waiting import WaitTimeout, wait_until

N = 7
SUBSETS = ("harmless-base", "helpful-base")
DEADLINE_S = 240.0  # a browser on a loaded 2-core runner: generous, and it costs nothing when things go well
COMMENT = 'close call, "B" is shorter'


def _export(tmp_path: Path) -> Path:
    for tag in ("alpha", "beta"):
        rows = [
            {"id": str(i), "subset": SUBSETS[i % 2], "question": f"Question {i}?", "answer": f"{tag} answer {i}"}
            for i in range(N)
        ]
        atomic_write_jsonl(tmp_path / f"{tag}.jsonl", rows)
    args = ["eval", "human", "export", str(tmp_path / "alpha.jsonl"), str(tmp_path / "beta.jsonl")]
    args += ["--name-a", "CycleAlign", "--name-b", "PRO", "--seed", "3", "--out", str(tmp_path / "human")]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    return tmp_path / "human"


def _choose(driver, item: int, choice: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'input[name="choice-{item}"][value="{choice}"]').click()


def _kept(driver) -> dict[int, tuple[str, str]]:  # type: ignore[no-untyped-def]
    """What the page holds now, per item: (the checked choice or "", the comment)."""
    script = """return Array.from(document.querySelectorAll('.item')).map(el => {
        const c = el.querySelector('input[type=radio]:checked');
        return [Number(el.dataset.item), c ? c.value : '', el.querySelector('.comment').value];});"""
    return {int(n): (c, t) for n, c, t in driver.execute_script(script)}


def _wait_for_progress(driver, text: str, what: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    def shown() -> str:
        return driver.find_element(By.ID, "progress").text

    try:
        wait_until(lambda: shown() == text, timeout=DEADLINE_S, what=what)
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}: the page says {shown()!r}, not {text!r}") from None


def _expected(shown: dict[int, tuple[str, str]], picks: dict[int, str]) -> dict[str, list[float]]:
    """Win / tie / lose of the first system (alpha) per subset and in total, from what the page showed."""
    outcomes: dict[str, list[str]] = {"total": []}
    for item, choice in picks.items():
        side_a, subset = shown[item]
        alpha_side = "A" if "alpha" in side_a else "B"
        outcome = "tie" if choice == "tie" else ("win" if choice == alpha_side else "lose")
        outcomes.setdefault(subset, []).append(outcome)
        outcomes["total"].append(outcome)
    return {s: [round(100 * o.count(k) / len(o), 1) for k in ("win", "tie", "lose")] for s, o in outcomes.items()}


def test_an_annotator_fills_reloads_downloads_and_imports_the_sheet(tmp_path: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    require_browser()
    out, downloads = _export(tmp_path), tmp_path / "downloads"
    downloads.mkdir()
    with (out / "sheet.csv").open(newline="") as f:
        sheet = list(csv.DictReader(f))
    subset_of = {f"Question {i}?": SUBSETS[i % 2] for i in range(N)}
    shown = {int(r["item"]): (r["answer_A"], subset_of[r["question"]]) for r in sheet}
    order, sheet_id = [int(r["item"]) for r in sheet], sheet[0]["sheet"]
    picks = {item: ("A", "B", "tie")[k % 3] for k, item in enumerate(order[:-1])}  # the last item left blank
    with headless_chrome(downloads) as driver:
        driver.get((out / "sheet.html").as_uri())
        for item, choice in picks.items():
            _choose(driver, item, choice)
        from selenium.webdriver.common.by import By

        driver.find_element(By.CSS_SELECTOR, f'.item[data-item="{order[0]}"] .comment').send_keys(COMMENT)
        _wait_for_progress(driver, f"{N - 1} / {N} answered", "the choices counted")
        stored = json.loads(driver.execute_script(f"return localStorage.getItem('cyclealign-human-{sheet_id}')"))
        assert {r["item"]: r["choice"] for r in stored} == {**picks, order[-1]: ""}

        driver.refresh()
        _wait_for_progress(driver, f"{N - 1} / {N} answered", "the choices restored after the reload")
        kept = _kept(driver)
        assert {n: c for n, (c, _) in kept.items()} == {**picks, order[-1]: ""}
        assert kept[order[0]][1] == COMMENT and all(t == "" for n, (_, t) in kept.items() if n != order[0])

        driver.find_element(By.ID, "save-json").click()
        driver.find_element(By.ID, "save-csv").click()
        names = {f"filled-{sheet_id}.json", f"filled-{sheet_id}.csv"}

        def both_saved() -> bool:
            present = {p.name for p in downloads.iterdir()}
            return names <= present and not any(p.endswith(".crdownload") for p in present)

        wait_until(both_saved, timeout=DEADLINE_S, what=f"both downloads in {downloads}")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, int(height) + 100)
        shot = artifact_path("human-eval-filled-sheet.png", tmp_path)
        assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot of the filled page: {shot}")
    record_property("screenshot", str(shot))

    saved = json.loads((downloads / f"filled-{sheet_id}.json").read_text())
    assert {r["item"]: r["choice"] for r in saved["items"]} == {**picks, order[-1]: ""}
    expected = _expected(shown, picks)
    for suffix in ("json", "csv"):
        where = tmp_path / f"imported-{suffix}"
        filled = str(downloads / f"filled-{sheet_id}.{suffix}")
        args = ["eval", "human", "import", filled, "--key", str(out / "key.json"), "--out", str(where)]
        result = CliRunner().invoke(app, args, terminal_width=200)
        assert result.exit_code == 0, result.output
        assert "Table 3" in result.output and "1 item(s) left unanswered" in result.output
        with (where / "table3_human.csv").open(newline="") as f:
            rows = {r[0]: r[1:] for r in list(csv.reader(f))[1:]}
        assert {s: [float(x) for x in r[:3]] for s, r in rows.items()} == expected, (suffix, rows)
        assert rows["total"][3:] == [str(N - 1), "1"]
        total_line = next(line for line in result.output.splitlines() if "total" in line)
        assert all(f"{x:g}" in total_line or f"{x}" in total_line for x in expected["total"]), total_line
        judged = [json.loads(x) for x in (where / "human_judgements.jsonl").read_text().splitlines()]
        assert [j["comment"] for j in judged if j["item"] == order[0]] == [COMMENT]


def test_without_a_browser_ci_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true, so not skipped: .*chromium"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        require_browser()
