"""numba's on-disk cache never runs code compiled from older versions of the sources.

numba's own cache (``njit(cache=True)``) only checks the file that defines a function; a
function compiled with code or constants of other files must use
:func:`hsicomp.numba_cache.cached_njit` with all of those files among its sources.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import hsicomp
from hsicomp.numba_cache import source_digest

SRC = Path(hsicomp.__file__).resolve().parents[1]


def test_digest_follows_every_source(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("X = 1\n")
    b.write_text("Y = 2\n")
    first = source_digest([a, b])
    assert source_digest([b, a]) == first
    b.write_text("Y = 3\n")
    assert source_digest([a, b]) != first
    assert source_digest([a]) != source_digest([a, b])


_PACKAGE = {
    "jit.py": """
        from pathlib import Path
        from hsicomp.numba_cache import cached_njit
        _jit = cached_njit(sorted(Path(__file__).parent.glob("*.py")))
    """,
    "helper.py": """
        from stalepkg.jit import _jit
        VALUE = 1
        @_jit
        def get():
            return VALUE
    """,
    "entry.py": """
        from stalepkg.helper import get
        from stalepkg.jit import _jit
        @_jit
        def run():
            return 10 * get()
    """,
}


def _run_entry(root: Path) -> tuple[int, int]:
    """(run(), cache hits of run) in a fresh interpreter."""
    code = ("from stalepkg.entry import run; v = run(); "
            "print(v, sum(run.stats.cache_hits.values()))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(SRC)]))
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    return int(out[0]), int(out[1])


def test_editing_a_helper_file_recompiles_its_callers(tmp_path: Path) -> None:
    pkg = tmp_path / "stalepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in _PACKAGE.items():
        (pkg / name).write_text(textwrap.dedent(text))
    assert _run_entry(tmp_path) == (10, 0)  # compiled and cached
    assert _run_entry(tmp_path) == (10, 1)  # loaded from the cache
    helper = pkg / "helper.py"
    helper.write_text(helper.read_text().replace("VALUE = 1", "VALUE = 2"))
    # numba's own cache would load run() from the first compilation here and return 10
    assert _run_entry(tmp_path) == (20, 0)
