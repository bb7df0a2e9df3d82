"""attnviz benchmarks: one command, ``python -m benchmarks.run [--quick]``, from the
repository root. It prints a Markdown table of medians of repeated runs, as ratios to a
bare forward pass where a ratio is the honest unit on a shared, noisy machine:

1. capture overhead, 2. analysis cost, 3. query cost (in-process, per model);
4. the page in Chromium (click -> panel, upload -> render), 5. the app's memory,
6. cold start (all three through ``tests/browser.py``'s helpers);
7. ``attnviz explain`` throughput with one and two processes.

``--quick`` repeats little and exists so a test can prove the script still works; its
timings are not worth quoting.
"""
