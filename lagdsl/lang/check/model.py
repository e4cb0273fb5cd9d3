"""The `model` setting: a `gpt(...)` from scratch (its shape checked: whole, even heads, key/value
groups, a mixture lagdsl builds) or a `pretrained(...)` checkpoint (its `config.json` read by its
family's adapter; no weight opened), and the vocabulary either has."""

from __future__ import annotations

from pathlib import Path

from lagdsl.lang import syntax as ast
from lagdsl.lang.arch import mlp_hidden
from lagdsl.lang.catalogue import MODELS
from lagdsl.lang.check.calls import call_of
from lagdsl.lang.check.data import read_tokenizer
from lagdsl.lang.check.draft import Args, Draft
from lagdsl.lang.schedule import MAX_CONTEXT, MixtureSpec, ModelSpec, Shape, StdlibData, TokensData
from lagdsl.lang.style import Style

BYTE_VOCAB = 256  # byte-level data (no tokenizer)


def check_model(draft: Draft, setting: ast.Setting) -> None:
    call = call_of(draft, "model", MODELS, setting)
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
    norm = args.pop("norm")
    if norm != "rms":
        args["style"] = Style(norm=norm)  # type: ignore[arg-type]
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
    tokenizer = folder / TOKENIZER_FILE
    tokenizer_name = f"{written.rstrip('/')}/{TOKENIZER_FILE}" if tokenizer.is_file() else None
    data = draft.settings.data or StdlibData()
    if tokenizer_name is None and getattr(data, "tokenizer", None) is None and not isinstance(data, TokensData):
        return no_tokenizer(draft, folder, node.span)  # the data would be bytes, ids the model never learnt
    if tokenizer_name is not None and getattr(data, "tokenizer", None) is None and not isinstance(data, TokensData):
        # the data is tokenized as the model was: with the checkpoint's own tokenizer
        draft.settings.data = data.model_copy(update={"tokenizer": tokenizer_name})
        read_tokenizer(draft, setting, tokenizer_name)
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
        "mlp": arch.mlp,
        "style": arch.style,
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
