"""The attack suite itself: every case names the clause it comes from."""

import ast
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.clause("house rule: each attack case cites its source")
def test_every_case_names_its_clause():
    missing = []
    for path in sorted(HERE.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = [ast.unparse(decorator) for decorator in node.decorator_list]
                if not any("clause(" in mark for mark in marks):
                    missing.append(f"{path.name}::{node.name}")
    assert not missing, f"cases without a clause marker: {missing}"
