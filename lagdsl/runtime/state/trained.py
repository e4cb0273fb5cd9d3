"""A run's trained model, as `lagdsl export` and `lagdsl sample` read it: the weights (the run's
`final/`, or a checkpoint), the model's config and the run's tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lagdsl.families import Family
from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT
from lagdsl.runtime.state import checkpoint as ckpt
from lagdsl.text import tokenizer as tok

#: The run directory's copy of the tokenizer its data was tokenized with (none for byte data).
TOKENIZER_FILE = "tokenizer.json"
#: The run directory's copy of a pretrained source's `config.json` and tokenizer files (no weights).
SOURCE_DIR = "source"


class TrainedError(Exception):
    """A run whose model cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Trained:
    """A trained model's weights (on the CPU: whole, or from a sharded run each tensor read as it is
    asked for), config and tokenizer."""

    config: GPTConfig
    state: Mapping[str, torch.Tensor]
    tokenizer_json: str | None  # None: token ids with no tokenizer known
    source: Path  # where the weights came from

    def model(self, device: torch.device | str = "cpu") -> GPT:
        model = GPT(self.config)
        model.load_state_dict(self.state)
        return model.to(device).eval()


def open_trained(
    run_dir: Path,
    checkpoint: Path | None = None,
    tokenizer: Path | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> Trained:
    """The model of `run_dir`: from `checkpoint` if given, else `final/`, else (an unfinished run)
    the newest intact checkpoint, with a note through `say`. The tokenizer: `tokenizer` if given,
    else the run's copy, else bytes for byte data (a run of `tokens` without a tokenizer has none)."""
    if not (run_dir / "run.json").is_file():
        raise TrainedError(f"`{run_dir}` is not a run directory (it has no `run.json`)")
    if checkpoint is not None:
        final = checkpoint if checkpoint.is_dir() else checkpoint.parent
        if (final / "config.json").is_file() and _final_model(final) is not None:  # a `final/` folder
            config, state = _from_final(final)
        else:
            config, state = _from_checkpoint(checkpoint)
        _check_belongs(run_dir, checkpoint, config)
        source = checkpoint
    elif (final_model := _final_model(run_dir / "final")) is not None:
        config, state = _from_final(run_dir / "final")
        source = final_model
    else:
        newest = ckpt.newest_intact(run_dir / "checkpoints")
        if newest is None:
            raise TrainedError(f"`{run_dir}` has no final model and no intact checkpoint: train it first")
        say(f"`{run_dir}` did not finish: using its newest checkpoint, `{newest.name}`")
        config, state = _from_checkpoint(newest)
        source = newest
    return Trained(config, state, _tokenizer_json(run_dir, tokenizer), source)


def _check_belongs(run_dir: Path, checkpoint: Path, config: GPTConfig) -> None:
    """A `--checkpoint` of another run (another vocabulary, or a shape this run never has) is
    refused: its tokens would not mean what the run's tokenizer says. Checked against the run's
    own schedule (torch-free); a schedule that no longer validates is not held against it."""
    from lagdsl.artifacts.run import run_base
    from lagdsl.lang import check_text
    from lagdsl.plan import build_plan

    try:  # checked from where it was first checked, so that its relative paths resolve as then
        text = (run_dir / "schedule.grow").read_text(encoding="utf-8")
        checked = check_text(text, str(run_dir / "schedule.grow"), run_base(run_dir))
    except (OSError, UnicodeDecodeError):
        return
    if checked.schedule is None:
        return
    plan = build_plan(checked.schedule)
    shapes = {(node.after.depth, node.after.width) for node in plan.nodes()}
    vocab = checked.schedule.model.vocab
    if config.vocab != vocab or (config.depth, config.width) not in shapes:
        raise TrainedError(
            f"`{checkpoint}` is not a checkpoint of `{run_dir}`: its model (vocabulary {config.vocab}, depth "
            f"{config.depth}, width {config.width}) is not one this run trains (vocabulary {vocab}); give one "
            f"from `{run_dir / 'checkpoints'}`, or the run it came from"
        )


def _final_model(final: Path) -> Path | None:
    """The weights of a `final/` folder: `model.pt` (one process, DDP), or `model.dcp/` (a sharded
    run, each rank's shards: read whole here), or None."""
    for name in ("model.pt", "model.dcp"):
        if (final / name).exists():
            return final / name
    return None


def _from_final(final: Path) -> tuple[GPTConfig, Mapping[str, torch.Tensor]]:
    from lagdsl.runtime.state import dcp

    model = _final_model(final)
    assert model is not None
    try:
        state = dcp.Tensors(model) if model.is_dir() else ckpt.load(model)["model"]
        config = _config(json.loads((final / "config.json").read_text(encoding="utf-8")))
    except (ckpt.CheckpointError, dcp.ShardedError) as error:
        raise TrainedError(f"`{model}` {error}") from None
    except (OSError, ValueError) as error:
        raise TrainedError(f"`{final / 'config.json'}` cannot be read: {error}") from None
    return config, state


def _from_checkpoint(path: Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    if not path.exists():
        raise TrainedError(f"checkpoint `{path}` does not exist")
    try:
        payload = ckpt.load(path)
    except ckpt.CheckpointError as error:
        raise TrainedError(f"checkpoint `{path}` {error}") from None
    if "config" not in payload or "model" not in payload:
        raise TrainedError(f"`{path}` is not a lagdsl checkpoint (it holds no model and config)")
    return _config(payload["config"]), payload["model"]


def _config(fields: Any) -> GPTConfig:
    try:
        return GPTConfig(**fields)
    except (TypeError, ValueError) as error:
        raise TrainedError(f"the saved model config is not one this version reads: {error}") from None


def pretrained_source(run_dir: Path) -> tuple[Family, dict[str, Any]] | None:
    """The family and `config.json` of the checkpoint a run began from (the run directory's copy),
    or None for a run from scratch."""
    from lagdsl.families import FamilyError, family_named

    try:
        pretrained = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("pretrained")
        if not pretrained:
            return None
        config = json.loads((run_dir / SOURCE_DIR / "config.json").read_text(encoding="utf-8"))
        return family_named(pretrained["family"]), config
    except (OSError, ValueError, KeyError, TypeError, AttributeError, FamilyError) as error:
        raise TrainedError(
            f"`{run_dir}` began from a pretrained model whose record (`run.json`, `{SOURCE_DIR}/config.json`) "
            f"cannot be read: {error}"
        ) from None


def pretrained_folder(run_dir: Path) -> Path | None:
    """The pretrained folder a run began from, as `run.json` records it (None: from scratch, or no
    record to read)."""
    try:
        pretrained = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("pretrained")
        return Path(pretrained["folder"]) if pretrained else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _tokenizer_json(run_dir: Path, tokenizer: Path | None) -> str | None:
    """The text of the tokenizer: `tokenizer`, else the one `run.json` names (`bytes`, the run's
    `tokenizer.json`, or `ids`: none)."""
    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        kind = info.get("tokenizer") or ("ids" if str(info.get("data", "")).startswith("tokens") else "bytes")
    except (OSError, ValueError, AttributeError):
        raise TrainedError(f"`{run_dir / 'run.json'}` cannot be read: is this a run directory?") from None
    if tokenizer is None and kind != TOKENIZER_FILE:
        return None if kind == "ids" else tok.byte_level_json()
    try:
        return tok.load(tokenizer or run_dir / TOKENIZER_FILE).to_str()
    except tok.TokenizerError as error:
        raise TrainedError(str(error)) from None
