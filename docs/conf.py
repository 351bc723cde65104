"""Sphinx configuration: the Markdown pages (MyST) plus an API reference generated from docstrings."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Importing the modules for autodoc imports Airflow: give it a throwaway home, removed after the build.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="fdw-docs-airflow-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], True)

project = "airflow-provider-fdw"
author = "airflow-provider-fdw developers"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 2
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # signatures already carry them; keeps the pages readable
html_theme = "alabaster"
html_title = "airflow-provider-fdw"
