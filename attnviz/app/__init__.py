"""The Streamlit app's side of attnviz: shared state for many sessions (``service``),
what the page says and how a click maps to the image (``page``), and the figure that
stays mounted across reruns (``live_figure``). The core never imports this package."""
