"""Pass: settings. Every setting's value: types, choices, ranges; the data (`lagdsl.lang.check.data`)
and the model with its shape (`lagdsl.lang.check.model`) in modules of their own."""

from __future__ import annotations

import re
from collections.abc import Callable

from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import (
    CHECKPOINT_OPTIONS,
    DEVICES,
    EVAL_OPTIONS,
    LR_SCHEDULES,
    OPTIMIZERS,
)
from lagdsl.lang.check.budgets import rows_of
from lagdsl.lang.check.calls import call_of, value_of
from lagdsl.lang.check.data import check_data
from lagdsl.lang.check.draft import Args, Draft, Every, LRCall
from lagdsl.lang.check.model import check_model
from lagdsl.lang.diagnostics import did_you_mean
from lagdsl.lang.params import Param, Signature, bind, coerce, show
from lagdsl.lang.schedule import (
    MAX_BATCH,
    MAX_CONTEXT,
    SGD,
    AdamW,
    Schedule,
)

_OPTIMIZER_MODELS: dict[str, type[AdamW | SGD]] = {"adamw": AdamW, "sgd": SGD}


def check_settings(draft: Draft) -> Draft:
    """Each setting's value into `draft.settings`; the model last, once the data is known."""
    for key, setting in draft.setting_nodes.items():
        if key != "model":
            _HANDLERS[key](draft, setting)
    if "model" in draft.setting_nodes:
        check_model(draft, draft.setting_nodes["model"])
    _rows(draft)
    _conflicts(draft)
    return draft


def _rows(draft: Draft) -> None:
    """`batch N tokens`: the rows of a step at the model's first context (each stage's are checked
    at its own, `lagdsl.lang.check.budgets`)."""
    s = draft.settings
    if s.batch_tokens is None:
        return
    if s.model is None:
        s.batch = None
        return
    s.batch = rows_of(draft, s.batch_tokens, s.model.context, draft.setting_nodes["batch"].value.span)


def _conflicts(draft: Draft) -> None:
    """Settings each valid alone that cannot run together."""
    s, nodes = draft.settings, draft.setting_nodes
    if s.parallel != "fsdp":
        return
    if s.probes == "parallel":
        draft.report(
            "E0109",
            "`probes parallel` cannot be used with `parallel fsdp`",
            nodes["probes"].span,
            "needs whole models",
            "parallel probes give each team of ranks a whole copy of its candidate, which sharding "
            "exists to avoid: use `parallel ddp`, or `probes sequential`",
        )
    if s.precision == "fp16":
        draft.report(
            "E0109",
            "`precision fp16` cannot be used with `parallel fsdp`",
            nodes["precision"].span,
            "no loss scaling for sharded models",
            "sharded models train in `bf16` (FSDP's mixed precision) or `fp32`: use one of them, or `parallel ddp`",
        )


def _optimizer(draft: Draft, setting: ast.Setting) -> None:
    call = call_of(draft, "optimizer", OPTIMIZERS, setting)
    if call is not None:
        draft.settings.optimizer = _OPTIMIZER_MODELS[call[0]].model_validate(call[1])


def _lr(draft: Draft, setting: ast.Setting) -> None:
    call = call_of(draft, "learning-rate schedule", LR_SCHEDULES, setting)
    if call is not None:
        draft.settings.lr = LRCall(*call)


def _device(draft: Draft, setting: ast.Setting) -> None:
    node = setting.value
    if isinstance(node, ast.Name) and node.value in DEVICES:
        draft.settings.device = node.value
        return
    if isinstance(node, ast.String) and re.fullmatch(r"cpu|cuda(:[0-9]+)?", node.value):
        draft.settings.device = node.value
        return
    draft.report(
        "E0104",
        f"unknown device `{show(node)}`",
        node.span,
        "not a device",
        did_you_mean(show(node), DEVICES) or 'write `auto`, `cpu`, `cuda` or a string such as `"cuda:1"`',
    )


def _batch(draft: Draft, setting: ast.Setting) -> None:
    value = setting.value
    if isinstance(value, ast.Duration) and value.unit == "tokens":  # rows follow the context (`_rows`)
        tokens = value.amount.value
        if not isinstance(tokens, int) or not 1 <= tokens <= MAX_BATCH * MAX_CONTEXT:
            draft.report(
                "E0302", f"`batch` must be a whole number of tokens from 1, found `{show(value)}`", value.span,
                "out of range", "such as `batch 65536 tokens`",
            )  # fmt: skip
            return
        draft.settings.batch_tokens = tokens
        setting = ast.Setting(setting.key, ast.Number(1, "1", value.span), setting.extra, setting.span, setting.options)
    batch = value_of(draft, Param.of(Schedule, "batch"), setting)
    accumulate: object | None = 1
    for arg in setting.extra:
        accumulate, problem = coerce(Param.of(Schedule, "accumulate"), arg.value, None)
        if problem:
            draft.diagnostics.append(problem)
    if isinstance(batch, int) and isinstance(accumulate, int):
        draft.settings.batch, draft.settings.accumulate = batch, accumulate


def _every(options: Signature | None, slot: str) -> Callable[[Draft, ast.Setting], None]:
    def handle(draft: Draft, setting: ast.Setting) -> None:
        args: Args | None = {}
        if options is not None:
            call = ast.Call(ast.Name(setting.key.value, setting.key.span), setting.extra, setting.span)
            args = bind(options, call, draft.diagnostics)
        if args is not None and isinstance(setting.value, ast.Duration):
            setattr(draft.settings, slot, Every(setting.value, args))

    return handle


def _simple(param: Param, slot: str) -> Callable[[Draft, ast.Setting], None]:
    def handle(draft: Draft, setting: ast.Setting) -> None:
        value = value_of(draft, param, setting)
        if value is not None:
            setattr(draft.settings, slot, value)

    return handle


def _name(draft: Draft, setting: ast.Setting) -> None:
    if isinstance(setting.value, ast.Name | ast.String):
        draft.settings.name = setting.value.value


def _total(draft: Draft, setting: ast.Setting) -> None:
    """`total` is converted to steps by the budgets pass, which reads the setting itself."""


_HANDLERS: dict[str, Callable[[Draft, ast.Setting], None]] = {
    "schedule": _name,
    "seed": _simple(Param.of(Schedule, "seed"), "seed"),
    "device": _device,
    "precision": _simple(Param.of(Schedule, "precision"), "precision"),
    "compile": _simple(Param.of(Schedule, "compile"), "compile"),
    "parallel": _simple(Param.of(Schedule, "parallel"), "parallel"),
    "probes": _simple(Param.of(Schedule, "probes"), "probes"),
    "activations": _simple(Param.of(Schedule, "activations"), "activations"),
    "data": check_data,
    "batch": _batch,
    "optimizer": _optimizer,
    "lr": _lr,
    "total": _total,
    "eval": _every(EVAL_OPTIONS, "eval"),
    "checkpoint": _every(CHECKPOINT_OPTIONS, "checkpoint"),
    "log": _every(None, "log"),
}
