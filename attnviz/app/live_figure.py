"""A Plotly figure that stays mounted across Streamlit reruns.

``st.plotly_chart`` gives a chart a new identity whenever its figure changes, so the
browser throws the chart away and draws it from scratch (``Plotly.newPlot``): on the
self-attention view that happens to every layer's figure on every click. This
component keeps one Plotly instance per key and updates it with ``Plotly.react``,
which redraws only what changed (the maps; the photos stay).

The frontend is two static files (``live_figure_frontend/``) plus the ``plotly.min.js``
that the installed ``plotly`` package ships: nothing is fetched from a network. Streamlit
serves a component's files from one directory and refuses symlinks that leave it, so
the three are copied once into a directory named after their content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import plotly
import plotly.graph_objects as go

FRONTEND = Path(__file__).with_name("live_figure_frontend")


def plotly_js() -> Path:
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def frontend_dir(root: Path | None = None) -> Path:
    """The directory Streamlit serves the component from: the frontend files and
    plotly.js, copied under ``root`` (default: the system's temporary directory) into
    a directory named after their content, so a new version never reuses an old copy."""
    sources = [*sorted(FRONTEND.iterdir()), plotly_js()]
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.name.encode() + b"\0" + src.read_bytes())
    target = Path(root or tempfile.gettempdir()) / f"attnviz-live-figure-{digest.hexdigest()[:16]}"
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        for src in sources:
            shutil.copyfile(src, staging / src.name)
        try:
            os.replace(staging, target)  # atomic: a concurrent copy either wins or finds it done
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.is_dir():
                raise
    return target


@cache
def _component():
    import streamlit.components.v1 as components

    return components.declare_component("live_figure", path=str(frontend_dir()))


def live_figure(fig: go.Figure, key: str, config: dict | None = None) -> None:
    """Draw ``fig`` in the Streamlit page; later calls with the same ``key`` update
    the same chart in place. ``config`` is Plotly's (modebar, PNG export). Where the
    component's directory cannot be written (a read-only temporary directory), the
    figure is drawn by ``st.plotly_chart`` instead: slower to update, same figure."""
    try:
        component = _component()
    except OSError:
        import streamlit as st

        st.plotly_chart(fig, config=config, key=key)
        return
    component(figure=fig.to_json(), config=config or {}, key=key, default=None)
