"""Damaged checkpoint folders (`bench/damaged.py`, the generator `bench/fuzz.py --checkpoints`
soaks): whatever the damage, `validate` and the weights' reading give a diagnostic or one line,
never an internal error."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import damaged


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return damaged.base_folder(tmp_path_factory.mktemp("damaged"))


def test_the_good_folder_is_read_and_every_kind_of_damage_is_made(base: tuple[Path, Path], tmp_path: Path) -> None:
    folder, corpus = base
    from lagdsl.lang import check_text

    result = check_text(damaged.SCHEDULE.format(folder=folder, corpus=corpus), str(folder.parent / "good.grow"))
    assert result.errors == [] and result.schedule is not None  # the good folder is read, not refused
    assert damaged.read_as_run_does(folder, corpus) is None  # and its weights load
    kinds = {damaged.damaged(folder, tmp_path / "case", random.Random(seed)).split(":")[0] for seed in range(40)}
    assert kinds == {"config", "weights", "index", "tokenizer"}


def test_a_head_dim_beyond_any_model_is_refused_by_the_checker(base: tuple[Path, Path], tmp_path: Path) -> None:
    """Found by the soak: `head_dim` 10^30 passed `validate` and the run died building the model."""
    import json
    import shutil

    folder, corpus = base
    shutil.copytree(folder, tmp_path / "case")
    config = json.loads((tmp_path / "case" / "config.json").read_text())
    (tmp_path / "case" / "config.json").write_text(json.dumps({**config, "head_dim": 10**30}))
    from lagdsl.lang import check_text

    result = check_text(damaged.SCHEDULE.format(folder=tmp_path / "case", corpus=corpus), str(tmp_path / "t.grow"))
    assert [d.code for d in result.errors] == ["E0302"] and "`head_dim`" in result.errors[0].message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_a_damaged_checkpoint_is_refused_in_one_line_never_an_internal_error(
    base: tuple[Path, Path], tmp_path: Path, seed: int
) -> None:
    folder, corpus = base
    what = damaged.damaged(folder, tmp_path / "case", random.Random(seed))
    error = damaged.read_as_run_does(tmp_path / "case", corpus)
    assert error is None, f"{what}:\n{error}"
