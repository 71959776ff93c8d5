"""Loading a pipeline by reference: a file is imported without shadowing anything."""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

from warmrun.pipeline import load_pipeline


def test_a_pipeline_file_named_like_a_stdlib_module_does_not_shadow_it(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text(
        "import helpers\n\n"
        "def pipeline(count: int = 1) -> dict:\n"
        "    return {'count': count * helpers.FACTOR}\n"
    )
    (tmp_path / "helpers.py").write_text("FACTOR = 3\n")

    pipeline = load_pipeline(f"{tmp_path / 'json.py'}:pipeline")

    assert pipeline.function(count=2) == {"count": 6}  # its sibling module imported
    assert sys.modules["json"] is json
    assert Path(json.__file__).parent == Path(sysconfig.get_paths()["stdlib"]) / "json"
    assert json.dumps({"still": "the stdlib"}) == '{"still": "the stdlib"}'
    assert pipeline.function.__module__ == "warmrun_pipeline_json"


def test_a_pipeline_file_is_its_own_module_when_its_name_is_free(tmp_path: Path) -> None:
    (tmp_path / "my_unique_pipeline.py").write_text("def run() -> dict:\n    return {}\n")

    pipeline = load_pipeline(f"{tmp_path / 'my_unique_pipeline.py'}:run")

    assert pipeline.function.__module__ == "my_unique_pipeline"
    assert sys.modules["my_unique_pipeline"].run is pipeline.function
    # Loading it again (a second deployment in one process) reuses its name.
    again = load_pipeline(f"{tmp_path / 'my_unique_pipeline.py'}:run")
    assert again.function.__module__ == "my_unique_pipeline"
