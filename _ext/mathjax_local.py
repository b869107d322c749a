"""A Sphinx extension that serves MathJax 3 from the built book, so that formulas render offline.

The CDN that Sphinx loads MathJax from by default is slow or blocked for many readers (and absent
offline): every formula then shows as raw TeX. The ``django-static-mathjax`` package (in the
``book`` extra of ``pyproject.toml``; no Django needed) ships MathJax 3.2.2's ``es5`` build. After
an HTML build this extension copies the part of it that the book uses into ``_static/mathjax/``,
and it points Sphinx's ``mathjax_path`` there, so no page references a script outside the book.

Copied (about 2.7 MB of the package's 24 MB):
- ``tex-svg.js``: the TeX input (base, ams, newcommand, configmacros, autoload, require, ...) with
  SVG output, which draws every glyph from paths inside the script: no web fonts to load, so it
  also works for pages opened from disk (``file://``), where some browsers (Firefox) refuse fonts
  from another folder;
- ``input/tex/extensions/``: the TeX packages that ``autoload`` fetches when a page uses one of
  their macros (``\\boldsymbol`` in the ``\\bmu`` and ``\\bsigma`` macros, ``\\cancel``, ...).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

COMPONENT = "tex-svg.js"  # relative to MathJax's es5/ folder and to _static/mathjax/
FOLDERS = ("input/tex/extensions",)
TARGET = "mathjax"  # under _static/


def mathjax_source() -> Path:
    """The es5/ folder of the installed MathJax (from the ``django-static-mathjax`` package)."""
    try:
        import mathjax  # the django-static-mathjax package's top-level module
    except ImportError as err:
        raise ExtensionError("MathJax is not installed: run `pip install -e '.[book]'` (it brings "
                             "django-static-mathjax, which ships MathJax 3 for offline pages).") from err
    root = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (root / COMPONENT).is_file():
        raise ExtensionError(f"{root / COMPONENT} is missing: reinstall django-static-mathjax.")
    return root


def _use_local_mathjax(app: Sphinx, config) -> None:
    mathjax_source()  # fail early, before a long build, when the package is missing
    config.mathjax_path = f"{TARGET}/{COMPONENT}"  # Sphinx resolves it relative to _static/


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, dest = mathjax_source(), Path(app.outdir) / "_static" / TARGET
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / COMPONENT, dest / COMPONENT)
    for folder in FOLDERS:
        shutil.copytree(source / folder, dest / folder, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
