"""The live figure component's files: served from one directory, nothing from a network."""

from __future__ import annotations

import re

from attnviz.app import live_figure


def test_the_frontend_directory_holds_the_page_its_script_and_plotly(tmp_path):
    served = live_figure.frontend_dir(tmp_path)
    assert sorted(p.name for p in served.iterdir()) == ["index.html", "main.js", "plotly.min.js"]
    assert (served / "plotly.min.js").read_bytes() == live_figure.plotly_js().read_bytes()
    # Every script the page loads is one of those files: relative, no scheme, no host.
    sources = re.findall(r'src="([^"]+)"', (served / "index.html").read_text())
    assert sorted(sources) == ["./main.js", "./plotly.min.js"]
    assert not re.search(r"https?:|fetch\(|import\(", (served / "main.js").read_text())
    # Built once: a second call finds the same directory and leaves no staging copies.
    assert live_figure.frontend_dir(tmp_path) == served
    assert [p.name for p in tmp_path.iterdir()] == [served.name]


def test_the_directory_is_named_after_the_content(tmp_path, monkeypatch):
    first = live_figure.frontend_dir(tmp_path)
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in live_figure.FRONTEND.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    (changed / "main.js").write_text("// another version\n")
    monkeypatch.setattr(live_figure, "FRONTEND", changed)
    second = live_figure.frontend_dir(tmp_path)
    assert second != first and (second / "main.js").read_text() == "// another version\n"


def test_without_a_writable_directory_the_app_falls_back_to_plotly_chart(tiny_env, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr("attnviz.weights.SHIPPED_DIR", Path("/nonexistent"))
    monkeypatch.setattr(live_figure.tempfile, "gettempdir", lambda: "/nonexistent/tmp")
    live_figure._component.cache_clear()
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
        at.run()
        at.radio(key="view").set_value("Self-attention").run()
        at.radio(key="self_attn-how").set_value("Click").run()
        assert not at.exception, at.exception
        layers = [c for c in at.get("plotly_chart") if c.key.startswith("self_attn-panel-layer")]
        assert len(layers) == 2  # both layers, drawn by st.plotly_chart (the intervention panel's bars beside them)
        assert not [c for c in at.get("component_instance") if c.proto.component_name.endswith("live_figure")]
    finally:
        live_figure._component.cache_clear()
