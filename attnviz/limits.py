"""Every limit attnviz applies, in one place: the app, the CLI and the Docker config
read them from here (the Streamlit configs repeat MAX_CHECKPOINT_MB as the server's upload
limit; a test checks it)."""

MAX_UPLOAD_MB = 25
"""Largest file accepted from an upload or from the CLI, in megabytes."""

MAX_FILE_BYTES = MAX_UPLOAD_MB * 1024 * 1024

MAX_CHECKPOINT_MB = 200
"""Largest timm checkpoint accepted from the app's "Your own model" upload, in megabytes
(a ResNet-50's float32 weights are about 100 MB)."""

MAX_DECODE_PIXELS = 100_000_000
"""An image that claims more pixels than this is refused before decoding (a
decompression bomb, or too large to be honest)."""

PIXEL_BUDGET = 16_000_000
"""No decoded image holds more than this many pixels: a larger JPEG is decoded at a
reduced scale (1/2, 1/4 or 1/8), any other larger file is refused (it cannot be decoded
small), and a larger image passed in as a PIL image is downscaled."""

MIN_SIDE = 1
"""Smallest accepted side, in pixels (a 1x1 image is a valid image)."""

MAX_UPLOADED_MODELS = 4
"""Models uploaded through the app kept loaded at once (all sessions together)."""

RESULT_CACHE_ENTRIES = 16
"""Per-image analyses kept in memory by the app (shared by all sessions)."""

RESULT_CACHE_MB = 400
"""Upper bound on the memory held by the app's per-image cache, in megabytes."""

MAX_COMPOSED_MB = 256
"""Largest composed map of an axial attention layer (heads x N x N float32) that an
analysis forms, in megabytes: 39 MB for the 56x56 layer at 224 px; at 512 px that layer
is 128x128 and its map would take 1 GB, so such an input size is refused in one line."""
