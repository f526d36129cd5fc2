"""The one template every experiment follows.

An experiment is a script with a frozen dataclass ``Config`` (defaults at the top), a
``SMOKE`` dict of overrides that make it run in seconds for the tests, and ``main(cfg)``
at the bottom. ``parse_config(Config, SMOKE)`` builds the config from the command line:
every field is a flag (``--num-steps 500``), and ``--smoke`` applies the smoke overrides
first. Outputs go to ``results/<name>/`` (git-ignored).
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np


def _parse_value(text: str, default):
    if isinstance(default, bool):
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, tuple):
        kind = type(default[0]) if default else str
        return tuple(kind(part) for part in text.split(","))
    return type(default)(text)


def parse_config(config_cls, smoke: dict | None = None, argv: list[str] | None = None):
    """Build ``config_cls`` from command-line flags; ``--smoke`` applies ``smoke`` first.

    Tuple fields take comma-separated values (``--dims 2,16,64``).
    """
    parser = argparse.ArgumentParser(description=config_cls.__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny run for the tests")
    defaults = config_cls()
    for field in dataclasses.fields(config_cls):
        default = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=lambda text, d=default: _parse_value(text, d),
            default=None,
            help=f"default {default!r}",
        )
    args = parser.parse_args(argv)
    overrides = dict(smoke or {}) if args.smoke else {}
    overrides |= {k: v for k, v in vars(args).items() if k != "smoke" and v is not None}
    return dataclasses.replace(defaults, **overrides)


def output_dir(cfg) -> Path:
    """``cfg.out_dir`` created if needed."""
    path = Path(cfg.out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _to_builtin(value):
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_builtin(v) for v in value]
    if hasattr(value, "shape"):
        arr = np.asarray(value)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return value


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` (arrays become lists) as indented JSON."""
    path.write_text(json.dumps(_to_builtin(payload), indent=2) + "\n")
    return path


def markdown_table(rows: list[dict], columns: list[str] | None = None, fmt: str = "{:.4g}") -> str:
    """A GitHub-markdown table from a list of dicts (floats formatted with ``fmt``)."""
    columns = columns or list(rows[0])
    cell = lambda v: fmt.format(v) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def is_smoke() -> bool:
    """True when ``SCOREJAX_SMOKE`` is set: notebooks read it to shrink their runs."""
    return os.environ.get("SCOREJAX_SMOKE", "") not in ("", "0")
