"""attnviz's server: ``streamlit run serve.py`` serves the page (app.py) and, before it
accepts the first connection, loads every model and analyses the sample the page opens
on (``attnviz.app.service.warm_up``), so the first visitor waits for none of it."""

from __future__ import annotations

import asyncio
import signal
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


# uvicorn, which serves st.App, imports this module while it starts, after putting in its
# own SIGTERM handler: a method of the running uvicorn.Server.
_server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)


def _exit_cleanly(signum, frame) -> None:
    # `docker stop` and Kubernetes send SIGTERM. uvicorn's own handler shuts the server down
    # as on Ctrl-C (sessions closed, lifespan ended) but then raises the signal again, and the
    # process dies of it (status -15). Asking the server to stop does the same shutdown and
    # returns: the process exits with 0. Before uvicorn serves, there is nothing to close.
    if _server is None or not hasattr(_server, "should_exit"):
        sys.exit(0)
    _server.should_exit = True


signal.signal(signal.SIGTERM, _exit_cleanly)
app = st.App(Path(__file__).with_name("app.py"), lifespan=lifespan)
