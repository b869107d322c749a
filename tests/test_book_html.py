"""Checks of the built HTML book: formulas render offline, and lab solutions are hidden.

The HTML checks need a built book. By default the session fixture builds it as ``make book`` does
(warnings are errors) into this checkout's ``_build/``, so the ``book`` step that ``make test`` runs
after pytest only has to update it. ``COURSE_BOOK_OUTPUT=DIR`` builds into ``DIR/_build`` instead;
``COURSE_BOOK_HTML=DIR`` checks an existing ``_build/html`` without building.

Labs mark each exercise's solution cell with the first line ``# Solution`` and the cell tag
``hide-input`` (or ``hide-cell`` when the cell's own output would give the answer away).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HIDING_TAGS = {"hide-input", "hide-cell"}
# A Markdown cell that states an exercise: a heading or a bold lead that starts with "Exercise".
EXERCISE = re.compile(r"^(#+\s*|\*\*)Exercise\b", re.MULTILINE)


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def is_solution(cell: dict) -> bool:
    return cell["cell_type"] == "code" and _source(cell).lstrip().startswith("# Solution")


def solution_problems(nb: dict, name: str) -> list[str]:
    """What is wrong with a lab's solution cells: untagged ones, and exercises without one."""
    cells = nb["cells"]
    problems = [f"{name}, cell {i}: a '# Solution' cell without the tag hide-input (or hide-cell)"
                for i, c in enumerate(cells)
                if is_solution(c) and not HIDING_TAGS & set(c.get("metadata", {}).get("tags", []))]
    exercises = [i for i, c in enumerate(cells)
                 if c["cell_type"] == "markdown" and EXERCISE.search(_source(c))]
    for i, start in enumerate(exercises):
        end = exercises[i + 1] if i + 1 < len(exercises) else len(cells)
        if not any(is_solution(c) for c in cells[start + 1: end]):
            problems.append(f"{name}, cell {start}: an exercise with no '# Solution' code cell after it")
    return problems


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_every_lab_solution_is_tagged_to_be_hidden(lab):
    problems = solution_problems(json.loads(lab.read_text()), lab.name)
    assert not problems, "\n".join(problems)


def test_solution_rule_catches_an_untagged_or_missing_solution():
    exercise = {"cell_type": "markdown", "source": "### Exercise 1: a sum\n\nAdd 1 and 2.", "metadata": {}}
    solution = {"cell_type": "code", "source": "# Solution\nx = 1 + 2", "metadata": {}}
    assert len(solution_problems({"cells": [exercise, solution]}, "lab")) == 1  # untagged
    assert len(solution_problems({"cells": [exercise]}, "lab")) == 1  # no solution at all
    solution["metadata"]["tags"] = ["hide-input"]
    assert solution_problems({"cells": [exercise, solution]}, "lab") == []


# --- the built HTML -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def html_dir() -> Path:
    given = os.environ.get("COURSE_BOOK_HTML")
    if given:
        path = Path(given)
        assert (path / "index.html").is_file(), f"COURSE_BOOK_HTML={given} holds no built book"
        return path
    pytest.importorskip("jupyter_book", reason="the book extra is not installed")
    out = Path(os.environ.get("COURSE_BOOK_OUTPUT", ROOT))
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # pages need the inline backend
    done = subprocess.run([exe, "build", str(ROOT), "--path-output", str(out), "--warningiserror",
                           "--keep-going"], capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, "the book did not build:\n" + (done.stdout + done.stderr)[-4000:]
    return out / "_build" / "html"


def _pages(html_dir: Path) -> list[Path]:
    pages = sorted(html_dir.rglob("*.html"))
    pages = [p for p in pages if "_static" not in p.parts and "_sources" not in p.parts]
    assert pages, f"no HTML pages under {html_dir}"
    return pages


def _soup(page: Path):
    bs4 = pytest.importorskip("bs4")
    return bs4.BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")


def _inside(html_dir: Path, page: Path, url: str) -> Path | None:
    """The local file that ``url`` (as written in ``page``) points to, or None if it is external."""
    parsed = urlparse(url)
    if parsed.scheme or parsed.netloc:
        return None
    target = (page.parent / unquote(parsed.path)).resolve()
    return target if target.is_relative_to(html_dir.resolve()) else None


def test_no_page_loads_math_from_outside_the_book(html_dir):
    html_dir = html_dir.resolve()
    problems, math_pages = [], 0
    for page in _pages(html_dir):
        soup = _soup(page)
        for script in soup.find_all("script", src=True):
            src = script["src"]
            if not re.search(r"mathjax|katex|tex-(mml-)?(chtml|svg)", src, re.IGNORECASE):
                continue
            math_pages += 1
            local = _inside(html_dir, page, src)
            if local is None:
                problems.append(f"{page.relative_to(html_dir)} loads math from outside the book: {src}")
            elif not local.is_file():
                problems.append(f"{page.relative_to(html_dir)} loads {src}, which the build did not copy")
    assert not problems, "\n".join(problems)
    assert math_pages, "no page loads MathJax at all: the formulas would show as TeX source"


def test_no_page_loads_scripts_or_styles_from_the_internet(html_dir):
    html_dir = html_dir.resolve()
    problems = []
    for page in _pages(html_dir):
        soup = _soup(page)
        urls = [s["src"] for s in soup.find_all("script", src=True)]
        urls += [link["href"] for link in soup.find_all("link", href=True)
                 if {"stylesheet", "preload", "modulepreload"} & set(link.get("rel", []))]
        problems += [f"{page.relative_to(html_dir)}: {u}" for u in urls if _inside(html_dir, page, u) is None]
    assert not problems, "pages that break offline:\n" + "\n".join(problems)


def test_local_mathjax_has_the_tex_extensions_and_the_macros(html_dir):
    # autoload fetches e.g. [tex]/boldsymbol.js (used by the \bmu and \bsigma macros) on demand
    extensions = html_dir / "_static" / "mathjax" / "input" / "tex" / "extensions"
    for name in ("boldsymbol.js", "mathtools.js", "cancel.js"):
        assert (extensions / name).is_file(), f"{name} was not copied into {extensions}"
    config = next(s.string for s in _soup(html_dir / "book" / "vae.html").find_all("script")
                  if s.string and "window.MathJax" in s.string)
    assert "bsigma" in config and "macros" in config, "the book's TeX macros are not configured"


def test_code_cells_wrap_inside_the_column(html_dir):
    css = html_dir / "_static" / "code_cells.css"
    assert "pre-wrap" in css.read_text(), "code cells would scroll sideways past the book's column"
    for page in (html_dir / "notebooks").glob("*.html"):
        links = [link["href"] for link in _soup(page).find_all("link", href=True)]
        assert any("_static/code_cells.css" in href for href in links), f"{page.name} lacks the CSS"


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_lab_solutions_are_hidden_in_the_html(html_dir, lab):
    expected = sum(is_solution(c) for c in json.loads(lab.read_text())["cells"])
    page = html_dir / "notebooks" / f"{lab.stem}.html"
    assert page.is_file(), f"{page} was not built"
    shown, hidden = [], 0
    for cell in _soup(page).select("div.cell"):
        code = cell.select_one("div.cell_input pre")
        if code is None or not code.get_text().lstrip().startswith("# Solution"):
            continue
        details = code.find_parent("details")
        if details is not None and not details.has_attr("open"):
            hidden += 1
        else:
            shown.append(code.get_text()[:80])
    assert not shown, f"{page.name} shows solution cells in the open: {shown}"
    assert hidden == expected, f"{page.name}: {hidden} hidden solution cells, the lab has {expected}"
