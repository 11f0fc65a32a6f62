"""The README quotes the example DAGs' ``# [START howto_x]`` blocks: the quotes stay what the files say."""

from __future__ import annotations

import re
import textwrap

from tests.conftest import REPO_ROOT

_BLOCK = re.compile(r"^[ \t]*# \[START (howto_\w+)\]\n(.*?)^[ \t]*# \[END \1\]", re.S | re.M)


def _blocks() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted((REPO_ROOT / "dags").rglob("*.py")):
        for name, body in _BLOCK.findall(path.read_text()):
            out[name] = textwrap.dedent(body).rstrip()
    return out


def _lines(text: str) -> list[str]:
    """The text's non-blank lines (a quote is formatted as a top-level block: blank lines differ)."""
    return [line for line in text.splitlines() if line.strip()]


def test_every_quoted_howto_block_is_the_dag_files_own_text():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = _blocks()
    named = set(re.findall(r"`(howto_\w+)`", readme))
    assert "howto_release_chain" in named and named <= set(blocks), sorted(named - set(blocks))
    quotes = [_lines(q) for q in re.findall(r"```python\n(.*?)```", readme, re.S)]
    quoted = {name for name in named if _lines(blocks[name]) in quotes}
    assert "howto_release_chain" in quoted, "README's quote of howto_release_chain differs from the DAG file"
