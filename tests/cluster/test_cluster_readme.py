"""The README's "Beyond one machine" program, taken from the README itself,
runs unchanged on both executors and prints the same thing: plait's local
pool by default, a private LocalCluster with PLAIT_EXECUTOR=cluster."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)
README = Path(__file__).resolve().parents[2] / "README.md"
BOUND = 120


def readme_program():
    text = README.read_text()
    section = text.split("## Beyond one machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's 'Beyond one machine' section has no python block"
    return blocks[0]


@pytest.mark.parametrize("kind", [
    "local",
    pytest.param("cluster", marks=pytest.mark.skipif(
        importlib.util.find_spec("distributed") is None,
        reason="plait.cluster needs dask.distributed (pip install 'plait[cluster]')")),
])
def test_the_readme_program_runs_on_both(kind, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(readme_program())
    env = dict(os.environ, PLAIT_EXECUTOR=kind)
    env.pop("PLAIT_CLUSTER_ADDRESS", None)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=BOUND, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sum(range(1, 10_001))), (out.stdout, out.stderr[-2000:])
