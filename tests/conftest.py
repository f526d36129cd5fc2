"""Tests run on the CPU in float32 (statistical checks must not depend on an accelerator)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are written to files, never shown
