"""attnviz's server: ``streamlit run serve.py`` serves the page (app.py) and, before it
accepts the first connection, loads every model and analyses the sample the page opens
on (``attnviz.app.service.warm_up``), so the first visitor waits for none of it."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import warnings
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


def _exit_cleanly(signum, frame) -> None:
    # `docker stop` and Kubernetes send SIGTERM. Served through st.App, the process
    # would die of it (status -15): ask the uvicorn server to shut down as it does on
    # Ctrl-C (sessions closed, lifespan ended), so it returns and exits with 0.
    import gc

    import uvicorn

    with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        servers = [o for o in gc.get_objects() if isinstance(o, uvicorn.Server)]
    if not servers:  # not serving yet (still warming up): nothing to close
        sys.exit(0)
    for server in servers:
        server.should_exit = True


signal.signal(signal.SIGTERM, _exit_cleanly)
app = st.App(Path(__file__).with_name("app.py"), lifespan=lifespan)
