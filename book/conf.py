"""The course site (`make book`): static HTML built by Sphinx and myst-nb from the committed executed notebooks
(`make publish` put a real run's outputs in them), offline, never running them. The source folder is the repository
itself, narrowed by `include_patterns` to the pages the site holds."""
project = "Fine-tune a small instruction LLM into a sentiment classifier"
author = "the course's authors"
extensions = ["myst_nb"]
nb_execution_mode = "off"  # "auto" would run any notebook without outputs; the site shows what was published
root_doc = "book/index"
include_patterns = ["book/index.md", "README.md", "notebooks/[0-9]*.ipynb", "notebooks/solutions/[0-9]*.ipynb",
                    "TEACHING.md", "docs/*.md", "docs/*.png"]
exclude_patterns = ["**.ipynb_checkpoints", "runs", ".venv", ".cache"]
myst_heading_anchors = 3  # `[text](page.md#a-heading)` links resolve, as they do on GitHub
html_theme = "sphinx_book_theme"
html_title = "Sentiment course"
html_extra_path = ["root"]  # index.html at the site's top, sending a browser to the start page
suppress_warnings = ["myst.xref_missing"]  # links to source files (helpers/*.py) are not pages; the test lists them
