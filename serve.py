"""attnviz's server: ``streamlit run serve.py`` serves the page (app.py) and, before it
accepts the first connection, loads every model and analyses the sample the page opens
on (``attnviz.app.service.warm_up``), so the first visitor waits for none of it."""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

from attnviz.app.service import warm_up


@asynccontextmanager
async def lifespan(app):
    t0 = time.perf_counter()
    problems = await asyncio.to_thread(warm_up)
    for line in problems:
        print(f"attnviz: warm-up skipped {line}", file=sys.stderr, flush=True)
    print(f"attnviz: models loaded and the first page analysed in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    yield None


app = st.App(Path(__file__).with_name("app.py"), lifespan=lifespan)
