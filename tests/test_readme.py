"""The README's fifteen-line example runs as written."""

import re
from pathlib import Path

import numpy as np


def test_readme_example_runs():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"## Fifteen lines.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 16
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    weights = np.asarray(
        namespace["sj"].metrics.mode_weights(namespace["samples"], namespace["target"].means)
    )
    # 2,000 independent chains of a symmetric target: 0.5 within 4.5 binomial SEs
    assert abs(weights[0] - 0.5) < 4.5 * np.sqrt(0.25 / 2000)


def test_the_declared_licence_ships_with_the_code():
    root = Path(__file__).parent.parent
    assert 'license = "MIT"' in (root / "pyproject.toml").read_text()
    assert (root / "LICENSE").read_text().startswith("MIT License")
