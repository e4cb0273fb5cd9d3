"""Context as a growth dimension: `grow context to N with METHOD`, each method's positions as the
checker and the runtime compute them, the plan's cost at each stage's context, batches cut at the
model's context, and a run whose context grows, stopped and resumed (also on other numbers of
ranks), equal to the uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lagdsl
from lagdsl.lang.context_args import grown_positions
from lagdsl.lang.rope import Rope, yarn_mscale
from lagdsl.lang.schedule import Positions
from lagdsl.model import GPT, GPTConfig
from lagdsl.ops import GrowthSpec, check_training_state, grow
from tests.conftest import write_corpus
from tests.test_distributed import assert_close, launch, records, single

BEFORE = Positions(context=64, theta=10_000.0)


@pytest.mark.parametrize(
    ("method", "args", "theta", "rope"),
    [
        ("keep", {}, 10_000.0, None),
        ("theta", {"base": 500_000.0}, 500_000.0, None),
        ("pi", {}, 10_000.0, Rope("linear", 4.0)),
        ("ntk", {}, 10_000.0 * 4 ** (16 / 14), None),
        ("yarn", {}, 10_000.0, Rope("yarn", 4.0, 64, attention_factor=yarn_mscale(4.0))),
        ("yarn", {"factor": 8.0, "beta_fast": 16.0}, 10_000.0,
         Rope("yarn", 8.0, 64, beta_fast=16.0, attention_factor=yarn_mscale(8.0))),
        ("llama3", {"high_freq_factor": 2.0}, 10_000.0, Rope("llama3", 4.0, 64, 1.0, 2.0)),
    ],
)  # fmt: skip
def test_each_method_gives_the_positions_its_paper_does(
    method: str, args: dict[str, object], theta: float, rope: Rope | None
) -> None:
    after = grown_positions(method, args, BEFORE, 256, head_size=16)
    assert isinstance(after, Positions)
    assert (after.context, after.theta, after.rope) == (256, pytest.approx(theta, rel=1e-12), rope)


def test_a_method_applied_again_compounds_and_keeps_the_first_context() -> None:
    once = grown_positions("yarn", {}, BEFORE, 128, 16)
    assert isinstance(once, Positions)
    twice = grown_positions("yarn", {}, once, 512, 16)
    assert isinstance(twice, Positions) and twice.rope == Rope("yarn", 8.0, 64, attention_factor=yarn_mscale(8.0))
    linear = grown_positions("pi", {}, grown_positions("pi", {}, BEFORE, 128, 16), 384, 16)  # type: ignore[arg-type]
    assert isinstance(linear, Positions) and linear.rope == Rope("linear", 6.0)
    assert "`yarn`" in str(grown_positions("pi", {}, once, 256, 16))  # a method that does not compose
    dynamic = Positions(context=64, rope=Rope("dynamic", 2.0, 64))
    assert "grow its context with `keep`" in str(grown_positions("yarn", {}, dynamic, 128, 16))
    assert isinstance(grown_positions("keep", {}, dynamic, 128, 16), Positions)


def trained(context: int = 16) -> tuple[GPT, torch.optim.Optimizer]:
    model = GPT(GPTConfig(vocab=61, context=context, width=32, heads=4, depth=2))
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    x = torch.randint(0, 61, (4, context), generator=torch.Generator().manual_seed(1))
    model(x, x)[1].backward()  # type: ignore[union-attr]
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("method", ["keep", "theta", "pi", "ntk", "yarn", "llama3"])
def test_a_context_growth_keeps_every_weight_and_its_state_and_reads_longer_sequences(method: str) -> None:
    model, optimizer = trained()
    x = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(x)[0]
    params = {n: p for n, p in model.named_parameters()}
    state = {n: optimizer.state[p]["exp_avg"].clone() for n, p in params.items()}
    args = {"base": 40_000.0} if method == "theta" else {}
    result = grow(model, optimizer, GrowthSpec(method, "context", 64, args), torch.Generator())
    check_training_state(result.model, result.optimizer)
    grown, moved = result.model, result.optimizer
    assert grown.config.context == 64 and grown.rotary_cos.shape[0] == 64
    assert moved is not None
    for name, param in grown.named_parameters():
        assert param is params[name] and torch.equal(moved.state[param]["exp_avg"], state[name])
    with torch.no_grad():
        after = grown(x)[0]
        grown(torch.randint(0, 61, (1, 64)))  # the longer context fits
    if method == "keep":  # the same positions: the same function at the old lengths, to the bit
        assert torch.equal(after, before)
    else:
        assert not torch.allclose(after, before, atol=1e-4)


# ------------------------------------------------------------------------------ the checker and the plan

MODEL = "model gpt(context=32, width=32, heads=4, depth=2)\nbatch 4\noptimizer adamw(lr=1e-3)\n"


def check(stages: str) -> tuple[list[str], object]:
    result = lagdsl.check_text(MODEL + "stage a { train 10 steps }\n" + stages, "t.grow")
    return [d.code for d in result.diagnostics if d.code.startswith("E")], result.schedule


@pytest.mark.parametrize(
    ("stages", "codes"),
    [
        ("stage b { grow context to 16 with keep train 5 steps }", ["E0401"]),
        ("stage b { grow context to 4194304 with keep train 5 steps }", ["E0302"]),
        ("stage b { grow context to 64 with yarn(factor=1) train 5 steps }", ["E0302"]),
        ("stage b { grow context to 64 with llama3(low_freq_factor=4, high_freq_factor=2) train 5 steps }",
         ["E0403"]),
        ("stage b { grow context to 64 with pi train 5 steps }\n"
         "stage c { grow context to 128 with yarn train 5 steps }", ["E0403"]),
        # a later method must apply to every candidate's positions
        ("stage b { grow context to 64 { candidates [pi, theta(base=20000)] probe 5 steps } train 10 steps }\n"
         "stage c { grow context to 128 with ntk train 5 steps }", ["E0403"]),
        ("stage b { grow context to 64 { candidates [pi, yarn] probe 5 steps } train 10 steps }\n"
         "stage c { grow context to 128 with keep train 5 steps }", []),
    ],
)  # fmt: skip
def test_the_checker_refuses_a_context_its_method_cannot_reach(stages: str, codes: list[str]) -> None:
    found, _ = check(stages)
    assert found == codes


def test_a_later_method_that_fails_after_one_candidate_names_that_candidate() -> None:
    """`ntk` applies to `theta`'s positions and not to `pi`'s: the error says which of the earlier
    probe's candidates it cannot follow."""
    result = lagdsl.check_text(
        MODEL + "stage a { train 10 steps }\n"
        "stage b { grow context to 64 { candidates [pi, theta(base=20000)] probe 5 steps } train 10 steps }\n"
        "stage c { grow context to 128 with ntk train 5 steps }",
        "t.grow",
    )
    assert [d.message for d in result.errors] == [
        "`ntk` cannot grow context 64 -> 128, after the earlier probe's candidate `pi`"
    ]


def test_the_plan_counts_each_stage_at_its_context() -> None:
    from lagdsl.lang.arch import param_count
    from lagdsl.plan.build import build_plan

    found, schedule = check(
        "stage b { grow context to 64 with keep train 10 steps }\n"
        "stage c { grow context to 128 { candidates [pi, yarn] probe 4 steps } train 10 steps }"
    )
    assert found == []
    plan = build_plan(schedule)  # type: ignore[arg-type]
    non_embedding = param_count(vocab=256, width=32, depth=2, mlp="swiglu", heads=4).non_embedding
    for row, context in zip(plan.stages, (32, 64, 128), strict=True):
        per_token = 6 * non_embedding + 6 * 2 * context * 32  # 6 N + 6 L T w
        assert row.tokens == 10 * 4 * context
        assert row.flops == 10 * 4 * context * per_token
        assert row.shape.context == context
    assert plan.totals.mainline_tokens == 10 * 4 * (32 + 64 + 128)
    assert plan.stages[-1].memory.activations > 2 * plan.stages[0].memory.activations


# ------------------------------------------------------------------------------ runs

SCHEDULE = """
schedule longer
seed 3
{parallel}
model gpt(context=16, width=16, heads=2, depth=2)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3)
eval every 5 steps (batches=2)
checkpoint every 7 steps (keep=4)
stage short {{ train 8 steps }}
stage long {{ grow context to 32 with keep  train 6 steps }}
stage longest {{
  grow context to 64 {{
    candidates [pi, yarn, theta(base=40000)]
    probe 3 steps
    select lowest val_loss
  }}
  train 6 steps
}}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("context")
    write_corpus(root)
    (root / "one.grow").write_text(SCHEDULE.format(parallel=""))
    (root / "fsdp.grow").write_text(SCHEDULE.format(parallel="parallel fsdp"))
    single(root, "one.grow", "--out", "one")
    return root


def test_a_run_cuts_its_batches_at_each_stages_context_and_logs_the_growth(project: Path) -> None:
    events = records(project / "one")
    grows = [e for e in events if e["event"] in ("grow", "select")]
    assert [(g["before"]["context"], g["after"]["context"]) for g in grows] == [(16, 32), (32, 64)]
    steps = [e for e in events if e["event"] == "step"]
    by_step = {e["step"]: e["tokens"] for e in steps}
    assert by_step[7] == 8 * 4 * 16 and by_step[8] == 8 * 4 * 16 + 4 * 32  # each step at its stage's context
    import json

    summary = json.loads((project / "one" / "summary.json").read_text())
    assert summary["final_shape"]["context"] == 64 and summary["tokens"] == 4 * (8 * 16 + 6 * 32 + 6 * 64)
    from lagdsl.runtime.state.trained import open_trained

    model = open_trained(project / "one").model()
    winner = summary["winners"]["longest"]
    positions = {"pi": "linear", "yarn": "yarn", "theta(base=40000)": None}[winner]
    assert model.config.context == 64 and model.rotary_cos.shape[0] == 64
    assert (model.config.rope_scaling.kind if model.config.rope_scaling else None) == positions
    assert model.config.rope_theta == (40_000.0 if winner.startswith("theta") else 10_000.0)


def test_a_run_stopped_after_a_context_growth_resumes_to_the_same_events(project: Path) -> None:
    single(project, "one.grow", "--out", "stopped", "--max-steps", "11")
    single(project, "--resume", "stopped")
    assert_close(records(project / "stopped"), records(project / "one"), tolerance=0.0)


@pytest.mark.slow
def test_two_ranks_grow_the_context_as_one_process_and_resume_on_one(project: Path) -> None:
    result = launch(project, "fsdp.grow", "--out", "fsdp", "--max-steps", "11", ungathered=True)
    assert result.returncode == 0, result.stderr[-3000:]
    single(project, "--resume", "fsdp")
    assert_close(records(project / "fsdp"), records(project / "one"))


def test_durations_in_tokens_follow_each_stages_context() -> None:
    found, schedule = check(
        "stage b { grow context to 64 { candidates [pi, yarn] probe 512 tokens } train 2560 tokens }"
    )
    assert found == []
    (stage,) = schedule.stages[1:]  # type: ignore[attr-defined]
    assert stage.train_steps == 10 and stage.growths[0].probe.steps == 2  # 256 tokens a step at context 64


@pytest.mark.parametrize("setting", ["total 20k tokens", "eval every 1k tokens", "checkpoint every 1k tokens"])
def test_a_whole_run_duration_in_tokens_is_refused_where_the_context_grows(setting: str) -> None:
    text = f"{setting}\n{MODEL}stage a {{ train 10 steps }}\nstage b {{ grow context to 64 with keep train 10 steps }}"
    result = lagdsl.check_text(text, "t.grow")
    problems = [d for d in result.diagnostics if d.code == "E0301"]
    assert len(problems) == 1 and "the context grows" in problems[0].message


def test_a_batch_in_tokens_keeps_the_tokens_per_step_as_the_context_grows(project: Path) -> None:
    text = MODEL.replace("batch 4", "batch 256 tokens") + "stage a { train 10 steps }\n"
    text += "stage b { grow context to 64 with keep train 10 steps }\n"
    text += "stage c { grow context to 512 with keep train 2 steps }"
    result = lagdsl.check_text(text, "t.grow")
    (problem,) = [d for d in result.diagnostics if d.code.startswith("E")]
    assert problem.code == "E0302" and "context 512" in problem.message  # 256 tokens are half a row there
    result = lagdsl.check_text(text.replace("to 512", "to 128"), "t.grow")
    schedule = result.schedule
    assert schedule is not None and [schedule.rows(c) for c in (32, 64, 128)] == [8, 4, 2]
    from lagdsl.plan.build import build_plan

    plan = build_plan(schedule)
    assert [row.tokens for row in plan.stages] == [2560, 2560, 512]  # 256 a step at every context
    # the run: each step's batch is 256 tokens, as rows of the stage's context
    (project / "tokens.grow").write_text(
        SCHEDULE.format(parallel="").replace("batch 4", "batch 64 tokens").replace("schedule longer", "schedule t")
    )
    single(project, "tokens.grow", "--out", "tokens")
    steps = {e["step"]: e["tokens"] for e in records(project / "tokens") if e["event"] == "step"}
    assert all(steps[s] == 64 * (s + 1) for s in steps)


def test_the_loss_at_positions_is_the_loss_of_those_tokens_alone() -> None:
    import contextlib

    import torch.nn.functional as F

    from lagdsl.runtime.data.batches import Batches
    from lagdsl.runtime.data.corpus import Corpus
    from lagdsl.runtime.distributed import world as dist
    from lagdsl.runtime.training.evaluation import Evaluator

    tokens = torch.randint(0, 61, (4000,), generator=torch.Generator().manual_seed(5)).numpy()
    corpus = Corpus(train=tokens, val=tokens, vocab=61, fingerprint="", description="")
    batches = Batches(corpus, 4, 16, 0, torch.device("cpu"))
    evaluator = Evaluator(batches, torch.device("cpu"), contextlib.nullcontext, dist.ONE, 2)
    model, _ = trained()
    model.eval()
    whole = evaluator.evaluate(model)
    late = evaluator.evaluate(model, positions=(8, 16))
    losses = []
    with torch.no_grad():
        for index in range(2):
            inputs, targets = batches.val(index)
            logits, _ = model(inputs)
            losses.append(F.cross_entropy(logits[:, 8:].reshape(-1, 61), targets[:, 8:].reshape(-1)))
    assert late == pytest.approx(torch.stack(losses).mean().item(), rel=1e-6) and late != pytest.approx(whole)


def test_a_probe_scores_by_the_loss_beyond_the_old_context_where_asked(project: Path) -> None:
    text = SCHEDULE.format(parallel="").replace("select lowest val_loss", "select lowest val_loss at positions 32..")
    assert "at positions 32.." in text
    (project / "late.grow").write_text(text)
    single(project, "late.grow", "--out", "late")
    late = next(e for e in records(project / "late") if e["event"] == "select")
    whole = next(e for e in records(project / "one") if e["event"] == "select")
    assert late["rule"] == "lowest val_loss at positions 32..64" and whole["rule"] == "lowest val_loss"
    assert late["scores"].keys() == whole["scores"].keys()
    assert all(late["scores"][k] != whole["scores"][k] for k in late["scores"])  # another loss: of the late tokens
    assert late["winner"] == min(late["scores"], key=late["scores"].get)


@pytest.mark.parametrize(
    ("select", "code"),
    [
        ("select lowest loss at positions 32..", "E0305"),
        ("select lowest val_loss at positions 64..", "E0302"),
        ("select lowest val_loss at positions 8..4", "E0302"),
        ("select lowest val_loss at positions 0..65", "E0302"),
    ],
)
def test_positions_must_lie_within_the_grown_context(select: str, code: str) -> None:
    found, _ = check(
        f"stage b {{ grow context to 64 {{ candidates [pi, yarn] probe 5 steps {select} }} train 9 steps }}"
    )
    assert found == [code]


def test_a_run_stopped_before_its_context_growth_grows_on_resume_as_it_would_have(project: Path) -> None:
    single(project, "one.grow", "--out", "early", "--max-steps", "5")
    single(project, "--resume", "early")
    assert_close(records(project / "early"), records(project / "one"), tolerance=0.0)


def test_the_grown_run_exports_what_transformers_computes_at_the_new_context(project: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from click.testing import CliRunner

    from lagdsl.cli import main
    from lagdsl.runtime.state.trained import open_trained

    result = CliRunner().invoke(main, ["export", str(project / "one"), "-o", str(project / "one-hf")])
    assert result.exit_code == 0, result.output
    import json

    config = json.loads((project / "one-hf" / "config.json").read_text())
    assert config["max_position_embeddings"] == 64
    theirs = transformers.AutoModelForCausalLM.from_pretrained(project / "one-hf", dtype=torch.float32).eval()
    ours = open_trained(project / "one").model().eval()
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids)[0], atol=1e-5, rtol=0)


def test_the_report_names_each_stage_with_its_grown_context(project: Path) -> None:
    from lagdsl.analysis import figures
    from lagdsl.analysis.runlog import read_run

    log = read_run(project / "one")
    labels = [figures._shape(stage) for stage in log.stages]
    assert labels == ["depth 2, width 16", "depth 2, width 16, context 32", "depth 2, width 16, context 64"]


def test_validate_and_plan_of_a_context_schedule_import_no_torch() -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = f"""
import sys
from click.testing import CliRunner
from lagdsl.cli import main
for path in ({str(ROOT / "schedules" / "context_warmup.grow")!r},):
    for command in (["validate"], ["plan", "--format", "json"]):
        result = CliRunner().invoke(main, [*command, path])
        assert result.exit_code == 0, result.output
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_hand_built_case_where_the_long_position_rule_and_the_whole_loss_disagree() -> None:
    """Two "models" over a stream where each token is its predecessor + 1: `early` predicts the
    next token well on positions 0-9, `late` on positions 8-15. Over whole sequences `early` is
    better; beyond the old context (positions 8..16) `late` is, and the rule picks it."""
    import contextlib
    from types import SimpleNamespace

    from lagdsl.lang.schedule import SelectRule
    from lagdsl.runtime.data.batches import Batches
    from lagdsl.runtime.data.corpus import Corpus
    from lagdsl.runtime.distributed import world as dist
    from lagdsl.runtime.training import probes
    from lagdsl.runtime.training.evaluation import Evaluator

    vocab = 32
    stream = (torch.arange(5000) % vocab).numpy()
    corpus = Corpus(train=stream, val=stream, vocab=vocab, fingerprint="", description="")
    batches = Batches(corpus, 4, 16, 0, torch.device("cpu"))
    evaluator = Evaluator(batches, torch.device("cpu"), contextlib.nullcontext, dist.ONE, 2)

    class Knows(torch.nn.Module):
        def __init__(self, first: int, end: int) -> None:
            super().__init__()
            self.first, self.end = first, end
            self.config = SimpleNamespace(context=16, moe=None)

        def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
            logits = torch.zeros(*idx.shape, vocab)
            sure = torch.nn.functional.one_hot((idx + 1) % vocab, vocab).float() * 20
            logits[:, self.first : self.end] = sure[:, self.first : self.end]
            loss = (
                None
                if targets is None
                else torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
            )
            return logits, loss

    engine = SimpleNamespace(
        evaluate=lambda model, team=None, positions=None: evaluator.evaluate(model, None, team, positions)
    )
    candidates = {"early": Knows(0, 10), "late": Knows(8, 16)}

    def pick(rule: SelectRule) -> str:
        scores = {k: probes._score(engine, m, rule, [], 0, None) for k, m in candidates.items()}  # type: ignore[arg-type]
        return min(scores, key=scores.__getitem__)

    assert pick(SelectRule(metric="val_loss")) == "early"
    assert pick(SelectRule(metric="val_loss", positions=(8, 16))) == "late"


def test_a_pretrained_model_grown_longer_exports_its_method_for_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from click.testing import CliRunner

    from lagdsl.cli import main
    from lagdsl.families import read_config
    from lagdsl.runtime.state.trained import open_trained
    from tests.test_pretrained import make_checkpoint

    make_checkpoint(tmp_path / "source", "qwen2")  # 64 positions, biases on q, k and v
    write_corpus(tmp_path)
    (tmp_path / "long.grow").write_text(
        'model pretrained("source")\ndata text("corpus/*.txt")\nbatch 128 tokens\noptimizer adamw(lr=1e-3)\n'
        "stage short { train 2 steps }\nstage long { grow context to 128 with yarn(beta_fast=16) train 3 steps }\n"
    )
    single(tmp_path, "long.grow", "--out", "run")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-o", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    config = read_config(tmp_path / "hf")
    assert config["max_position_embeddings"] == 128
    assert config["rope_parameters"]["rope_type"] == "yarn" and config["rope_scaling"]["beta_fast"] == 16
    assert config["rope_parameters"]["original_max_position_embeddings"] == 64
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ours = open_trained(tmp_path / "run").model().eval()
    ids = torch.randint(0, 300, (2, 128), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids)[0], atol=1e-5, rtol=0)


def test_the_config_of_a_grown_shape_has_its_positions() -> None:
    found, schedule = check("stage b { grow context to 64 with yarn train 5 steps }")
    assert found == []
    config = GPTConfig.from_schedule(schedule, schedule.final_shape)  # type: ignore[arg-type]
    assert config.context == 64 and config.rope_scaling == Rope("yarn", 2.0, 32, attention_factor=yarn_mscale(2.0))
    assert GPTConfig.from_schedule(schedule).context == 32  # type: ignore[arg-type]
