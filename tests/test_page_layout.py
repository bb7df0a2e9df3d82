"""Every view of the page at 800 and 1400 px, as a person sees it in Chromium: no
exception, no horizontal scroll, no name or title cut short, no two chart labels on top of
each other, colour-bar titles inside their charts."""

from __future__ import annotations

import pytest

from .browser import app_server, chromium_page, open_view

VIEWS = ("Predictions", "SE", "CBAM", "Self-attention", "Axial", "Context", "Compare", "Export")

# Everything the page shows that a person reads, checked in the page itself.
LAYOUT_PROBLEMS = """() => {
  const out = [];
  const main = document.querySelector('[data-testid="stMain"]');
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    out.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
  if (main && main.scrollWidth > main.clientWidth + 1)
    out.push(`the main area scrolls sideways: ${main.scrollWidth} > ${main.clientWidth}`);
  for (const e of document.querySelectorAll('[data-testid="stException"]'))
    out.push(`exception: ${e.innerText.slice(0, 200)}`);
  // text cut short with an ellipsis (names, headings, labels)
  for (const e of main.querySelectorAll('*')) {
    const s = getComputedStyle(e);
    if (s.textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth + 1 && e.innerText.trim())
      out.push(`cut short: "${e.innerText.trim().slice(0, 60)}"`);
  }
  // Plotly charts: annotations (labels) must not overlap, titles must stay inside the chart
  const boxes = sel => [...sel].map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
  for (const chart of main.querySelectorAll('.js-plotly-plot')) {
    const frame = chart.getBoundingClientRect();
    const labels = boxes(chart.querySelectorAll('.annotation-text'));
    for (let i = 0; i < labels.length; i++)
      for (let j = i + 1; j < labels.length; j++) {
        const a = labels[i], b = labels[j];
        if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
          out.push(`overlapping labels in a chart: "${chart.querySelectorAll('.annotation-text')[i].textContent}"`);
      }
    for (const t of chart.querySelectorAll('.cbtitle text, .gtitle')) {
      const r = t.getBoundingClientRect();
      if (r.width && (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1))
        out.push(`title outside its chart: "${t.textContent.slice(0, 60)}"`);
    }
  }
  return out;
}"""


@pytest.mark.parametrize("width", [800, 1400])
def test_every_view_fits_the_window_with_nothing_cut_or_overlapping(width):
    problems = {}
    with app_server() as url, chromium_page(width=width, height=1000) as page:
        page.goto(url)
        page.get_by_text("temple (").first.wait_for(timeout=120_000)
        for view in VIEWS:
            open_view(page, view)
            if view == "Self-attention":
                page.wait_for_function("() => document.querySelector('.avx-root')?.dataset.ready === '1'",
                                       timeout=60_000)
            page.wait_for_timeout(2500)  # charts laid out
            found = page.evaluate(LAYOUT_PROBLEMS)
            if view == "Self-attention":
                page.get_by_role("radiogroup", name="Query by").get_by_text("Click", exact=True).click()
                page.wait_for_timeout(4000)
                found += page.evaluate(LAYOUT_PROBLEMS)
                page.get_by_role("radiogroup", name="Query by").get_by_text("Hover", exact=True).click()
            if found:
                problems[view] = sorted(set(found))
    assert problems == {}, problems
