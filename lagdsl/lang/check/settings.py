"""Pass: settings. Every setting's value: types, choices, ranges, and the model's shape."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from lagdsl.lang import syntax as ast
from lagdsl.lang.arch import mlp_hidden
from lagdsl.lang.catalogue import (
    CHECKPOINT_OPTIONS,
    DATA,
    DEVICES,
    EVAL_OPTIONS,
    LR_SCHEDULES,
    MODELS,
    OPTIMIZERS,
)
from lagdsl.lang.check.draft import Args, Draft, Every, LRCall
from lagdsl.lang.diagnostics import did_you_mean, one_of
from lagdsl.lang.params import Param, Signature, bind, coerce, show
from lagdsl.lang.schedule import (
    MAX_BATCH,
    MAX_CONTEXT,
    SGD,
    AdamW,
    JsonlData,
    MixtureSpec,
    ModelSpec,
    ParquetData,
    Schedule,
    Shape,
    StdlibData,
    TextData,
    TokensData,
)

BYTE_VOCAB = 256
_DATA_MODELS: dict[str, type[StdlibData | TextData | JsonlData | ParquetData | TokensData]] = {
    "stdlib": StdlibData,
    "text": TextData,
    "jsonl": JsonlData,
    "parquet": ParquetData,
    "tokens": TokensData,
}
_OPTIMIZER_MODELS: dict[str, type[AdamW | SGD]] = {"adamw": AdamW, "sgd": SGD}


def check_settings(draft: Draft) -> Draft:
    """Each setting's value into `draft.settings`; the model last, once the data is known."""
    for key, setting in draft.setting_nodes.items():
        if key != "model":
            _HANDLERS[key](draft, setting)
    if "model" in draft.setting_nodes:
        _model(draft, draft.setting_nodes["model"])
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
    rows = s.batch_tokens // s.model.context
    if rows * s.model.context != s.batch_tokens or rows > MAX_BATCH:
        node = draft.setting_nodes["batch"].value
        draft.report(
            "E0302", f"`batch {show(node)}` is not a whole number of rows of the context {s.model.context}",
            node.span, "rows = tokens / context", f"use a multiple of {s.model.context} tokens",
        )  # fmt: skip
        s.batch = None
        return
    s.batch = rows


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


def _value(draft: Draft, param: Param, setting: ast.Setting) -> object | None:
    value, problem = coerce(param, setting.value, None)
    if problem:
        draft.diagnostics.append(problem)
    return value


def _choice_of(draft: Draft, kind: str, table: dict[str, Signature], setting: ast.Setting) -> str | None:
    node = setting.value
    name_node = node.func if isinstance(node, ast.Call) else node
    name = name_node.value if isinstance(name_node, ast.Name) else show(name_node)
    if name not in table:
        draft.report(
            "E0104",
            f"unknown {kind} `{name}`",
            name_node.span,
            f"not a{'n' if kind[0] in 'aeiou' else ''} {kind}",
            did_you_mean(name, table) or f"the {kind}s are {one_of(table)}",
        )
        return None
    return name


def _call(draft: Draft, kind: str, table: dict[str, Signature], setting: ast.Setting) -> tuple[str, Args] | None:
    """A setting whose value calls one of `table` (`adamw(lr=1e-3)`, or a bare `stdlib`)."""
    name = _choice_of(draft, kind, table, setting)
    if name is None:
        return None
    node = setting.value
    if not isinstance(node, (ast.Call, ast.Name)):
        return None  # a string or number: _choice_of reported it
    args = bind(table[name], node, draft.diagnostics)
    return None if args is None else (name, args)


def _model(draft: Draft, setting: ast.Setting) -> None:
    call = _call(draft, "model", MODELS, setting)
    if call is None:
        return
    name, args = call
    if name == "pretrained":
        _pretrained(draft, setting, args)
        return
    width, heads = args["width"], args["heads"]
    assert isinstance(width, int) and isinstance(heads, int)
    if width % heads:
        draft.report(
            "E0303",
            f"`width` {width} is not divisible by `heads` {heads}",
            setting.value.span,
            "width / heads must be a whole head size",
            f"try `heads={_nearest_divisor(width, heads)}` or a width that is a multiple of {heads}",
        )
        return
    if (width // heads) % 2:
        even = [d for d in range(1, width + 1) if width % d == 0 and (width // d) % 2 == 0]
        hint = (
            f"try `heads={min(even, key=lambda d: (abs(d - heads), d))}`"
            if even
            else f"make `width` even, such as `width={width + 1}`"
        )
        draft.report(
            "E0307",
            f"the head size `width / heads` is {width // heads}, an odd number",
            setting.value.span,
            "rotary positions rotate pairs of dimensions",
            f"{hint}: every head needs an even size",
        )
        return
    kv_heads = args["kv_heads"]
    if isinstance(kv_heads, int) and heads % kv_heads:
        draft.report(
            "E0303",
            f"`heads` {heads} is not a multiple of `kv_heads` {kv_heads}",
            setting.value.span,
            "each key/value head serves a whole group of query heads",
            f"try `kv_heads={_nearest_divisor(heads, kv_heads)}`",
        )
        return
    vocab = _vocab(draft, setting, args["vocab"])
    if vocab is None:
        return
    args["vocab"] = vocab
    shape: dict[str, object] = {dim: args.pop(dim) for dim in ("depth", "width", "heads", "kv_heads")}
    experts, top_k = args.pop("experts"), args.pop("top_k")
    if experts != 1:
        assert isinstance(experts, int) and isinstance(top_k, int)
        if top_k > experts or args["mlp"] != "swiglu":
            draft.report(
                "E0303", f"`top_k={top_k}` is more than the {experts} experts" if top_k > experts
                else "a mixture of experts needs SwiGLU MLPs", setting.value.span, "not a mixture lagdsl builds",
                f"give `top_k` at most {experts}" if top_k > experts else "write `mlp=swiglu`",
            )  # fmt: skip
            return
        shape["moe"] = MixtureSpec(experts=experts, top_k=top_k, hidden=mlp_hidden(shape["width"], "swiglu"))  # type: ignore[arg-type]
    draft.settings.model = ModelSpec.model_validate({**args, "shape": shape})


def _vocab(draft: Draft, setting: ast.Setting, vocab: object) -> int | None:
    """The model's vocabulary: as given (checked against the data's tokenizer), or `auto` from the
    data; None when it cannot be known (reported already). One smaller than the tokenizer's is
    reported and kept, so that the shapes and growths are checked in the same round."""
    data, tokenizer_vocab = draft.settings.data, draft.settings.tokenizer_vocab
    if data is not None and getattr(data, "tokenizer", None) is not None and tokenizer_vocab is None:
        return None  # the tokenizer could not be read (reported): its size is unknown
    if vocab == "auto":
        if isinstance(data, TokensData) and tokenizer_vocab is None:
            draft.report(
                "E0306",
                "`vocab=auto` needs byte data or a tokenizer, and this schedule reads `tokens` without one",
                setting.value.span,
                "vocabulary unknown",
                'name the tokenizer that made them, `tokens(..., tokenizer="tokenizer.json")`, '
                "or give its size, such as `vocab=50304`",
            )
            return None
        return tokenizer_vocab or BYTE_VOCAB
    assert isinstance(vocab, int)
    if vocab < (tokenizer_vocab or 0):
        draft.report(
            "E0302",
            f"`vocab={vocab}` is smaller than the tokenizer's {tokenizer_vocab} tokens",
            setting.value.span,
            "too small for the data",
            f"use `vocab=auto` (or any size from {tokenizer_vocab})",
        )  # the model stays as written, so that the later passes check the rest of the file
    return vocab


def _pretrained(draft: Draft, setting: ast.Setting, args: Args) -> None:
    """`pretrained("folder", ...)`: the shape and quirks from the folder's `config.json` (read by its
    family's adapter; no weight is opened), its tokenizer for the data where the data names none."""
    from lagdsl.families.base import TOKENIZER_FILE
    from lagdsl.lang.check.checkpoint import no_tokenizer, read_checkpoint

    written = args["path"]
    assert isinstance(written, str)
    folder = Path(written) if Path(written).is_absolute() else draft.data_base / written
    node = setting.value
    path_node = node.args[0].value if isinstance(node, ast.Call) and node.args else node
    read = read_checkpoint(draft, folder, path_node.span)
    if read is None:
        return
    family, arch = read
    context = args["context"]
    if context == "auto" and arch.context > MAX_CONTEXT:
        draft.report(
            "E0302",
            f"`max_position_embeddings` {arch.context:,} in `{folder / 'config.json'}` is beyond lagdsl's limit "
            f"of {MAX_CONTEXT:,} positions",
            node.span,
            "`context=auto` takes it",
            f"give `context=` at most {MAX_CONTEXT:,}",
        )
        return
    context = arch.context if context == "auto" else context
    assert isinstance(context, int)
    if context > arch.context:
        draft.report(
            "E0302",
            f"`context={context}` is longer than the checkpoint's {arch.context} positions",
            node.span,
            "beyond what it was trained for",
            f"use `context=auto` or at most {arch.context}",
        )
        return
    if arch.window is not None and arch.window < context:
        draft.report(
            "E0309",
            f"the checkpoint attends over a sliding window of {arch.window} tokens, shorter than the context {context}",
            node.span,
            "lagdsl attends over the whole context",
            f"give `context={arch.window}` or less: within it a sliding window changes nothing",
        )
        return
    tokenizer = folder / TOKENIZER_FILE
    tokenizer_name = f"{written.rstrip('/')}/{TOKENIZER_FILE}" if tokenizer.is_file() else None
    data = draft.settings.data or StdlibData()
    if tokenizer_name is None and getattr(data, "tokenizer", None) is None and not isinstance(data, TokensData):
        return no_tokenizer(draft, folder, node.span)  # the data would be bytes, ids the model never learnt
    if tokenizer_name is not None and getattr(data, "tokenizer", None) is None and not isinstance(data, TokensData):
        # the data is tokenized as the model was: with the checkpoint's own tokenizer
        draft.settings.data = data.model_copy(update={"tokenizer": tokenizer_name})
        _read_tokenizer(draft, setting, tokenizer_name)
    vocab = _vocab(draft, setting, arch.vocab)
    if vocab is None:
        return
    dtype = args["dtype"]
    assert isinstance(dtype, str)
    if dtype == "fp16":  # AdamW's arithmetic in fp16: eps 1e-8 is 0, and the first step is NaN at any LR
        draft.report(
            "E0302",
            "`dtype=fp16` weights do not train: the optimizer's arithmetic underflows in fp16 (NaN at the first step)",
            node.span,
            "weights held in fp16",
            "use `dtype=bf16` (the same memory, fp32's range) or `dtype=fp32` with `precision fp16`",
        )
        return
    spec = {
        "vocab": arch.vocab,
        "context": context,
        "shape": Shape(
            depth=arch.depth,
            width=arch.width,
            heads=arch.heads,
            kv_heads=arch.kv_heads,
            hidden=arch.hidden,
            moe=arch.moe,
        ),
        "dropout": args["dropout"],
        "tie": arch.tie,
        "rope_theta": arch.rope_theta,
        "head_dim": arch.head_dim if arch.head_dim * arch.heads != arch.width else None,
        "rope_scaling": arch.rope_scaling,
        "qkv_bias": arch.qkv_bias,
        "qk_norm": arch.qk_norm,
        "norm_eps": arch.norm_eps,
        "pretrained": {
            "path": written,
            "folder": str(folder.resolve()),
            "family": family.name,
            "architecture": family.architecture,
            "dtype": dtype,
            "tokenizer": tokenizer_name,
            "params": arch.params,
        },
    }
    draft.settings.model = ModelSpec.model_validate(spec)


def _nearest_divisor(n: int, near: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - near), d))


def _data(draft: Draft, setting: ast.Setting) -> None:
    call = _call(draft, "data source", DATA, setting)
    if call is None:
        return
    data = _DATA_MODELS[call[0]].model_validate(call[1])
    draft.settings.data = data
    name = getattr(data, "tokenizer", None)
    if name is not None:
        _read_tokenizer(draft, setting, name)
    _look_for_files(draft, setting, data)


def _look_for_files(draft: Draft, setting: ast.Setting, data: object) -> None:
    """W0601 for a data glob that matches no file and a token file that is not there: `run` would
    stop on it, so `validate` says so first (the files are looked for, never read)."""
    from lagdsl.text.globs import matching

    if isinstance(data, (TextData, JsonlData, ParquetData)):
        wanted: list[tuple[str, str]] = [(data.glob, "glob")]
    elif isinstance(data, TokensData):
        wanted = []
        for key in ("train", "val"):
            names = getattr(data, key)
            for name in (names,) if isinstance(names, str) else names or ():
                wanted.append((name, key))
    else:
        return
    node = setting.value
    for name, key in wanted:
        path = Path(name) if Path(name).is_absolute() else draft.data_base / name
        pattern = any(c in name for c in "*?[")
        if matching(str(path), first=True) if pattern else path.is_file():
            continue
        arg = _argument(node, key, positional=key in ("glob", "train"))
        what = "matches no file" if pattern else "is not a file" if path.exists() else "does not exist"
        draft.report(
            "W0601",
            f"`{name}` {what} (looked in `{path.parent if not pattern else draft.data_base}`)",
            arg.span if arg is not None else node.span,
            "no data here",
            "`lagdsl run` would stop here: give a path relative to the schedule's folder (or an absolute one)",
        )


def _argument(node: ast.Value, name: str, positional: bool) -> ast.Value | None:
    """The value of the call's argument `name` (or its first positional one, where it may be given so)."""
    if not isinstance(node, ast.Call):
        return None
    for arg in node.args:
        if (arg.name is not None and arg.name.value == name) or (positional and arg.name is None):
            return arg.value
    return None


def _read_tokenizer(draft: Draft, setting: ast.Setting, name: str) -> None:
    """The size of the tokenizer `name` (relative to the schedule's folder) into the settings, or E0308."""
    from lagdsl.text.tokenizer import TokenizerError, load, vocab_size

    path = Path(name) if Path(name).is_absolute() else draft.data_base / name
    try:
        draft.settings.tokenizer_vocab = vocab_size(load(path))
    except TokenizerError as error:
        node = setting.value
        arg = (
            next((a for a in node.args if a.name and a.name.value == "tokenizer"), None)
            if isinstance(node, ast.Call)
            else None
        )
        draft.report(
            "E0308",
            str(error),
            arg.value.span if arg is not None else node.span,
            "cannot read this tokenizer",
            "give the path of a `tokenizer.json` (relative to the schedule's folder) written by Hugging Face "
            "`tokenizers`",
        )


def _optimizer(draft: Draft, setting: ast.Setting) -> None:
    call = _call(draft, "optimizer", OPTIMIZERS, setting)
    if call is not None:
        draft.settings.optimizer = _OPTIMIZER_MODELS[call[0]].model_validate(call[1])


def _lr(draft: Draft, setting: ast.Setting) -> None:
    call = _call(draft, "learning-rate schedule", LR_SCHEDULES, setting)
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
    batch = _value(draft, Param.of(Schedule, "batch"), setting)
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
        value = _value(draft, param, setting)
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
    "data": _data,
    "batch": _batch,
    "optimizer": _optimizer,
    "lr": _lr,
    "total": _total,
    "eval": _every(EVAL_OPTIONS, "eval"),
    "checkpoint": _every(CHECKPOINT_OPTIONS, "checkpoint"),
    "log": _every(None, "log"),
}
