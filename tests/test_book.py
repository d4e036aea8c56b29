"""The course site (`make book`): built offline from the committed notebooks without running them, then opened page by
page in headless Chromium: every page loads, every figure renders, and no link inside the site is broken."""
import re
from pathlib import Path

import pytest

from helpers.publish import build_book
from helpers.runs import course_notebooks, solution_notebooks

pytestmark = pytest.mark.slow  # a browser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return build_book(tmp_path_factory.mktemp("book") / "html").parent


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if not p.relative_to(site).parts[0].startswith("_")
                  and p.name not in ("genindex.html", "search.html") and p != site / "index.html")  # that one: a redirect


def test_the_site_holds_the_chapters_in_order_the_solutions_the_guide_and_the_docs(site):
    start = (site / "book" / "index.html").read_text()
    chapters = [nb.stem for nb in course_notebooks()]
    places = [start.index(f'href="../notebooks/{stem}.html"') for stem in chapters]
    assert places == sorted(places), "the chapters appear in their order"
    for nb in solution_notebooks():
        assert f'href="../notebooks/solutions/{nb.stem}.html"' in start
    assert 'href="../TEACHING.html"' in start and 'href="../README.html"' in start
    assert all(f'href="../docs/{page.stem}.html"' in start for page in (site / "docs").glob("*.html"))


def test_every_page_loads_with_its_figures_and_no_broken_link(site, browser):
    tab = browser.new_page()
    broken, blank, figures = [], [], {}
    for page in pages(site):
        response = tab.goto(page.as_uri())
        assert response is None or response.ok, page
        assert tab.title(), f"{page} has no title"
        figures[str(page.relative_to(site))] = tab.eval_on_selector_all("img", "imgs => imgs.length")
        blank += [f"{page.name}: {src}" for src in tab.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")]
        for href in tab.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))"):
            target = href.split("#")[0].split("?")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue  # an anchor on this page, or another site
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(site)} -> {href}")
    tab.goto((site / "index.html").as_uri())
    tab.wait_for_url("**/book/index.html")  # the site's top sends a browser to the start page
    tab.close()
    assert not blank, f"figures that did not render: {blank[:10]}"
    assert figures["notebooks/02_logged_training.html"] >= 2, "the published chapter's loss curve and confusion matrices"
    assert not broken, f"broken links: {broken[:10]}"
