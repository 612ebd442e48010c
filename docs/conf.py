"""Sphinx configuration of knn_gpu's documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``pip install -e ".[docs]"`` first). The API reference is written from
``knn_gpu.__all__`` each time the site is built (see ``write_api_reference``),
so a new public name appears in it by itself.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout being documented, not another install

import knn_gpu  # noqa: E402

project = "knn_gpu"
author = "the knn_gpu developers"
copyright = "the knn_gpu developers, BSD-3-Clause"
release = version = knn_gpu.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "api/generated/backreferences", "**.ipynb_checkpoints", "auto_examples/*.md5"]
templates_path = ["_templates"]
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# --- API reference --------------------------------------------------------
# Submodules whose own public names are documented (none today: every
# public name is re-exported by the package). Add "knn_gpu.something" here.
DOCUMENTED_SUBMODULES: list[str] = []


def _kind(obj: object) -> str:
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return "Exceptions"
    if inspect.isclass(obj):
        return "Estimators and classes"
    return "Functions"


def write_api_reference() -> None:
    """Write ``api/index.rst``: one autosummary entry per name in ``__all__``, grouped by kind."""
    groups: dict[str, list[str]] = {"Estimators and classes": [], "Functions": [], "Exceptions": []}
    for name in sorted(knn_gpu.__all__, key=str.lower):
        groups[_kind(getattr(knn_gpu, name))].append(name)
    lines = [
        ".. This file is written by docs/conf.py from knn_gpu.__all__; do not edit.",
        "",
        "API reference",
        "=============",
        "",
        "Every public name of ``knn_gpu`` (``knn_gpu.__all__``), generated from its docstring.",
        "",
        ".. currentmodule:: knn_gpu",
        "",
    ]
    for title, names in groups.items():
        if not names:
            continue
        lines += [title, "-" * len(title), "", ".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in names] + [""]
    for module_name in DOCUMENTED_SUBMODULES:
        module = __import__(module_name, fromlist=["__all__"])
        lines += [f"``{module_name}``", "-" * (len(module_name) + 4), "", f".. currentmodule:: {module_name}", ""]
        lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in module.__all__] + [""]
    target = DOCS / "api" / "index.rst"
    target.parent.mkdir(exist_ok=True)
    text = "\n".join(lines)
    if not target.exists() or target.read_text() != text:  # unchanged: no rebuild of every page
        target.write_text(text)


write_api_reference()

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False  # the class template lists the members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
add_module_names = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "sklearn": ("https://scikit-learn.org/stable", None),
}
# The build must not need the network (CI, offline machines): intersphinx
# only where KNN_GPU_DOCS_INTERSPHINX=1 says the inventories can be fetched.
if os.environ.get("KNN_GPU_DOCS_INTERSPHINX") != "1":
    intersphinx_mapping = {}

# --- Gallery ----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    # "Examples using X" on each API page: the names as the examples call them (knn_gpu.KNN).
    "backreferences_dir": "api/generated/backreferences",
    "doc_module": ("knn_gpu",),
    "filename_pattern": r"/plot_",  # plot_*.py run at build time; gpu_*.py are shown, not run
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "matplotlib_animations": False,
    "within_subsection_order": "ExampleTitleSortKey",  # the GPU example ("Training data ...") last
    "show_memory": False,
    "min_reported_time": 1e9,  # no timings on the pages: they depend on the machine that built them
    "line_numbers": False,
}

# --- HTML -------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"knn_gpu {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    # No "on this page" column where the width is needed for wide tables.
    "secondary_sidebar_items": {"**": ["page-toc"], "guide/migrating": [], "benchmarks": []},
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_sidebars = {"index": [], "benchmarks": [], "design": []}
html_show_sourcelink = False
html_last_updated_fmt = None

nitpicky = True
# Types written in numpydoc's prose form ("array of int, shape (n,)") are not
# objects to link to; these are the words of that form, not broken references.
nitpick_ignore_regex = [
    ("py:class", r"(array|arrays|array-like|ndarray|object|callable|optional|default|shape|int|float|bool|str|dict|list|tuple|None|or|of|any|namespace|sequence)"),
]


def _skip_scikit_learn_members(app, what, name, obj, skip, options):
    """Leave out what the drop-ins inherit from scikit-learn's bases (``get_params``, ``set_output``, metadata routing).

    Their docstrings are scikit-learn's, written against its own site's labels;
    the migration guide says these methods come from scikit-learn unchanged.
    """
    module = getattr(obj, "__module__", None) or ""
    if module == "sklearn" or module.startswith("sklearn."):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_scikit_learn_members)
