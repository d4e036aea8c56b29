"""The front door and the pages behind it: every relative link in README.md, TEACHING.md and docs/*.md leads to a file
or folder that exists, and the README stays short enough for a learner to read (issue 42)."""
import re
from pathlib import Path

import pytest

from helpers.config import ROOT

PAGES = [ROOT / "README.md", ROOT / "TEACHING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)  # a fenced code block, fences included
CODE = re.compile(r"`[^`\n]*`")  # inline code: `[x](y)` there is an example, not a link
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)
EXTERNAL = re.compile(r"^(https?:|mailto:)", re.I)


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def relative_links(text: str) -> list[str]:
    """Every link target on the page that names a file or folder of this repository, its #fragment cut off."""
    targets = [m.group(1) for m in LINK.finditer(CODE.sub("", prose(text)))]
    return [t.split("#", 1)[0] for t in targets if not EXTERNAL.match(t) and not t.startswith("#")]


def test_the_link_finder_sees_links_and_images_and_skips_the_rest():
    text = ("[a](notebooks/x.ipynb) ![b](demo.png) [c](../README.md#two-commands) [d](https://example.org/a)\n"
            "[e](mailto:x@example.org) [f](#anchor) `[g](in-code.md)`\n```\n[h](in-fence.md)\n```\n[i\nj](docs/)\n")
    assert relative_links(text) == ["notebooks/x.ipynb", "demo.png", "../README.md", "docs/"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    links = relative_links(page.read_text())
    broken = [t for t in links if not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to what does not exist: {broken}"


def test_the_readme_is_a_front_door_not_a_log():
    words = len(prose((ROOT / "README.md").read_text()).split())
    assert 1200 <= words <= 1900, f"README.md has {words} words outside its code blocks: keep it 1,200-1,900"
