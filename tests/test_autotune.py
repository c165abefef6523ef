"""Choosing kernels by measurement: the search, the config's overrides, the cache, and that
whatever is chosen computes what the tutorial's way computes."""
from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from core import autotune, narrow_attention, winograd
from core import trainer as tr
from core.autotune import Choice
from core.config import Config
from core.presets import tiny_config_dict
from core.runs import RunDir

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_choices_from_earlier_tests(monkeypatch):
    """Choices timed on a busy machine are kept for the process (autotune._UNREMEMBERED): on a
    loaded machine an earlier test's run would otherwise answer these tests' first timing."""
    monkeypatch.setattr(autotune, "_UNREMEMBERED", {})
START = Choice(precision="bf16", attention="chunked", channels_last=True, micro_batch_size=32)


def fake_measure(costs: dict[tuple, float], raises: set[tuple] = frozenset()):
    """A ``measure`` for search(): each choice costs what the table says, keyed by its fields
    (the last, ``winograd``, only where it is on)."""
    calls: list[Choice] = []

    def measure(choice: Choice):
        key = dataclasses.astuple(choice)[: None if choice.winograd else -1]
        calls.append(choice)
        if key in raises:
            raise RuntimeError("no such kernel here")
        return lambda: costs[key]
    return measure, calls


def test_search_keeps_the_fastest_value_of_each_field_in_turn():
    costs = {
        ("bf16", "chunked", True, 32): 5.0, ("fp32", "chunked", True, 32): 3.0,  # fp32 wins (an AVX2 CPU)
        ("fp32", "sdpa", True, 32): 1.0,  # then sdpa wins with fp32
        ("fp32", "sdpa", False, 32): 2.0,
    }
    measure, _ = fake_measure(costs)
    best, seconds = autotune.search(START, {"precision": ("bf16", "fp32"), "attention": ("chunked", "sdpa"),
                                            "channels_last": (True, False)}, measure)
    assert best == Choice("fp32", "sdpa", True, 32)
    assert seconds["channels_last"]["fp32/sdpa/nchw/32"] == 2.0


def test_each_round_keeps_its_own_timing_of_the_base():
    """Each round times its base again; the machine's speed may have moved since, and the costs
    a choice rests on are those of its own round: the precision round's fp32 figure is not
    replaced by a slower one of the attention round, which would show bf16 ahead of the winner."""
    passes = {"n": 0}

    def measure(choice: Choice):
        def run() -> float:
            passes["n"] += 1
            if choice.precision == "bf16":
                return 2.0
            if choice.attention == "sdpa":
                return 4.0
            return 1.0 if passes["n"] <= 6 else 3.0  # the machine slows down after the first round's passes
        return run

    best, seconds = autotune.search(START, {"precision": ("bf16", "fp32"), "attention": ("chunked", "sdpa")},
                                    measure)
    assert best == Choice("fp32", "chunked", True, 32)
    assert seconds["precision"] == {"bf16/chunked/nhwc/32": 2.0, "fp32/chunked/nhwc/32": 1.0}
    assert seconds["attention"] == {"fp32/chunked/nhwc/32": 3.0, "fp32/sdpa/nhwc/32": 4.0}


def test_rounds_before_the_part_size_are_timed_in_the_smallest_part():
    """fp32 in parts of 32 would take more memory to time than bf16 training takes."""
    costs = {
        ("bf16", "chunked", True, 16): 2.0, ("fp32", "chunked", True, 16): 3.0,
        ("bf16", "sdpa", True, 16): 1.0,
        ("bf16", "sdpa", True, 32): 0.9,
    }
    measure, calls = fake_measure(costs)
    best, seconds = autotune.search(START, {"precision": ("bf16", "fp32"), "attention": ("chunked", "sdpa"),
                                            "micro_batch_size": (32, 16)}, measure)
    assert best == Choice("bf16", "sdpa", True, 32)
    assert {c.micro_batch_size for c in calls[:-2]} == {16}  # all but the part-size round
    assert {c.micro_batch_size for c in calls[-2:]} == {32, 16}
    assert seconds["precision"]["fp32/chunked/nhwc/16"] == 3.0


def test_rounds_after_the_part_size_are_timed_in_the_part_chosen():
    """Winograd gains with the rows a part gives its products: its round runs at the part that
    training will run, which costs no more memory than training."""
    costs = {
        ("fp32", "chunked", True, 16, True): 1.00, ("fp32", "chunked", True, 32, True): 0.90,
        ("fp32", "chunked", True, 16): 0.99, ("fp32", "chunked", True, 32): 0.95,
    }
    measure, calls = fake_measure(costs)
    start = Choice("fp32", "chunked", True, 32, winograd=True)
    best, _ = autotune.search(start, {"micro_batch_size": (32, 16), "winograd": (True, False)}, measure)
    assert best == start
    assert {c.micro_batch_size for c in calls[-2:]} == {32}


@pytest.mark.parametrize("larger_cost, chosen", [(0.97, 16), (0.90, 32)])
def test_a_larger_part_must_be_clearly_faster_to_be_chosen(larger_cost, chosen):
    """Within timing noise the part that takes less memory wins."""
    costs = {("bf16", "chunked", True, 16): 1.0, ("bf16", "chunked", True, 32): larger_cost}
    measure, _ = fake_measure(costs)
    best, _ = autotune.search(START, {"micro_batch_size": (32, 16)}, measure)
    assert best.micro_batch_size == chosen


def test_a_candidate_that_raises_is_skipped():
    costs = {("bf16", "chunked", True, 32): 5.0}
    measure, calls = fake_measure(costs, raises={("bf16", "sdpa", True, 32)})
    best, seconds = autotune.search(START, {"attention": ("chunked", "sdpa")}, measure)
    assert best == START
    assert Choice("bf16", "sdpa", True, 32) in calls  # it was tried
    assert seconds == {"attention": {"bf16/chunked/nhwc/32": 5.0}}


def test_a_candidate_that_fails_while_timed_is_dropped():
    state = {"n": 0}

    def measure(choice: Choice):
        def run() -> float:
            if choice.attention == "sdpa":
                state["n"] += 1
                if state["n"] > 1:  # the untimed pass works, a timed one fails
                    raise torch.OutOfMemoryError("out of memory")
                return 0.1
            return 1.0
        return run

    best, _ = autotune.search(START, {"attention": ("chunked", "sdpa")}, measure)
    assert best == START


def test_noise_is_kept_out_by_taking_the_least_of_the_passes():
    timings = {"chunked": itertools.chain([9.0, 9.0, 2.0], itertools.repeat(9.0)),  # 1 untimed, then 9, 2, 9...
               "sdpa": itertools.repeat(3.0)}
    best, _ = autotune.search(START, {"attention": ("chunked", "sdpa")},
                              lambda c: lambda: next(timings[c.attention]))
    assert best.attention == "chunked"


@pytest.mark.parametrize("pass_seconds,timed", [(0.01, autotune.MAX_TIMED_PASSES), (5.0, autotune.TIMED_PASSES)])
def test_quick_passes_are_timed_more_often(monkeypatch, pass_seconds, timed):
    """A pass advances a fake clock by ``pass_seconds``: quick ones are repeated up to the cap
    (a round of two 0.01 s passes is far under ROUND_SECONDS), slow ones run the minimum."""
    clock = {"now": 0.0}
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: clock["now"])
    runs: list[str] = []

    def measure(choice: Choice):
        def run() -> float:
            clock["now"] += pass_seconds
            runs.append(choice.attention)
            return 1.0
        return run

    autotune.search(START, {"attention": ("chunked", "sdpa")}, measure)
    assert runs.count("chunked") == runs.count("sdpa") == 1 + timed  # one untimed pass, then the timed ones


def _config(**train) -> Config:
    return Config.from_dict(tiny_config_dict(**train))


def test_config_values_are_not_searched():
    cfg = _config(precision="bf16", attention="sdpa", micro_batch_size=4, batch_size=64)
    start, found = autotune.options(cfg, CPU, training=True, batch=64)
    assert (start.precision, start.attention, start.micro_batch_size) == ("bf16", "sdpa", 4)
    assert set(found) == {"channels_last"}


def test_auto_searches_attention_and_cpu_micro_batches():
    cfg = _config(precision="fp32", batch_size=64)
    start, found = autotune.options(cfg, CPU, training=True, batch=64)
    kernels = ("narrow", "chunked", "sdpa") if narrow_attention.available() else ("chunked", "sdpa")
    assert start == Choice("fp32", kernels[0], True, 32, winograd=winograd.available())
    assert found.get("winograd") == ((True, False) if winograd.available() else None)
    assert found["attention"] == kernels
    assert found["micro_batch_size"] == (32, 16)
    assert "precision" not in found  # fp32 asked for


def test_a_pinned_kernel_overrides_the_config():
    start, found = autotune.options(_config(precision="fp32"), CPU, training=True, batch=8, attention="naive")
    assert start.attention == "naive" and "attention" not in found


def test_sampling_searches_no_micro_batches():
    start, found = autotune.options(_config(precision="fp32"), CPU, training=False, batch=100)
    assert start.micro_batch_size is None and "micro_batch_size" not in found


def test_bf16_is_searched_only_where_auto_would_pick_it(monkeypatch):
    monkeypatch.setattr(autotune, "pick_precision", lambda pref, dev: autotune.Precision(torch.bfloat16))
    _, found = autotune.options(_config(precision="auto"), CPU, training=True, batch=8)
    assert found["precision"] == ("bf16", "fp32")
    monkeypatch.setattr(autotune, "pick_precision", lambda pref, dev: autotune.Precision(None))
    _, found = autotune.options(_config(precision="auto"), CPU, training=True, batch=8)
    assert "precision" not in found


def test_bf16_attention_products_are_timed_only_in_sampling_where_bf16_may_run(monkeypatch):
    """narrow-bf16 rounds attention's operands to bf16: a candidate only where the config lets
    auto pick bf16, in sampling (in fp32 training it is narrow), and on CPUs that run it. There the
    search starts from it, so that the precision round times fp32 networks with it."""
    monkeypatch.setattr(autotune.narrow_attention, "available", lambda: True)
    monkeypatch.setattr(autotune.narrow_attention, "available_bf16", lambda: True)
    monkeypatch.setattr(autotune, "pick_precision", lambda pref, dev: autotune.Precision(torch.bfloat16))
    start, found = autotune.options(_config(precision="auto"), CPU, training=False, batch=8)
    assert found["attention"] == ("narrow-bf16", "narrow", "chunked", "sdpa")
    assert start.attention == "narrow-bf16"
    _, found = autotune.options(_config(precision="auto"), CPU, training=True, batch=8)
    assert "narrow-bf16" not in found["attention"]
    _, found = autotune.options(_config(precision="bf16"), CPU, training=False, batch=8)
    assert "narrow-bf16" not in found["attention"]
    monkeypatch.setattr(autotune.narrow_attention, "available_bf16", lambda: False)
    _, found = autotune.options(_config(precision="auto"), CPU, training=False, batch=8)
    assert "narrow-bf16" not in found["attention"]


def test_cache_round_trips_and_ignores_a_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    assert autotune.read_cache("k") is None  # no file yet
    autotune.write_cache("k", START)
    assert autotune.read_cache("k") == START
    autotune.cache_path().write_text("{ not json")
    assert autotune.read_cache("k") is None
    autotune.write_cache("j", START)  # a damaged cache is replaced, not a failure
    assert autotune.read_cache("j") == START
    autotune.cache_path().write_text(json.dumps({"version": 1, "entries": {"k": {"precision": "fp32"}}}))
    assert autotune.read_cache("k") is None  # an entry of another shape


def test_cache_key_changes_with_what_the_timings_depend_on(monkeypatch):
    cfg = _config(precision="fp32")
    start, found = autotune.options(cfg, CPU, training=True, batch=8)

    def key(config=cfg, training=True, batch=8, searched=found) -> str:
        return autotune.cache_key(config, CPU, training=training, batch=batch, start=start, searched=searched)

    base = key()
    assert key() == base
    other_model = Config.from_dict({**tiny_config_dict(precision="fp32"),
                                    "model_params": {**tiny_config_dict()["model_params"], "im_size": 32}})
    assert len({base, key(training=False), key(batch=16), key(config=other_model),
                key(searched={"channels_last": (True, False)})}) == 5
    assert key(config=_config(precision="fp32", lr=0.5)) == base  # the learning rate costs no time
    monkeypatch.setattr(torch, "__version__", "0.0-other")
    assert key() != base
    monkeypatch.undo()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert key() != base
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_tune_times_once_then_remembers_and_leaves_the_weights_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "machine_is_busy", lambda: False)
    cfg = _config(precision="fp32")
    trainer = tr.Trainer(cfg, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    first = autotune.tune(trainer.model, cfg, CPU, training=True, batch=8)
    assert not first.cached and first.seconds  # it measured
    assert first.choice.attention in autotune.attention_kernels(CPU)
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in trainer.model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    again = autotune.tune(trainer.model, cfg, CPU, training=True, batch=8)
    assert again.cached and again.choice == first.choice


@pytest.mark.slow
def test_timings_made_on_a_busy_machine_are_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "machine_is_busy", lambda: True)
    cfg = _config(precision="fp32")
    model = tr.Trainer(cfg, tmp_path / "run").model
    first = autotune.tune(model, cfg, CPU, training=True, batch=8)
    assert not first.cached and first.seconds and not autotune.cache_path().exists()
    again = autotune.tune(model, cfg, CPU, training=True, batch=8)  # this process keeps its choice
    assert again.cached and again.choice == first.choice
    monkeypatch.setattr(autotune, "_UNREMEMBERED", {})  # a new process times again
    assert not autotune.tune(model, cfg, CPU, training=True, batch=8).cached


@pytest.mark.parametrize("load,cores,busy", [(0.3, 2, False), (1.5, 2, True), (1.5, 8, False)])
def test_busy_means_load_above_half_the_cores(monkeypatch, load, cores, busy):
    monkeypatch.setattr(autotune.os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(autotune.os, "cpu_count", lambda: cores)
    assert autotune.machine_is_busy() is busy


def test_nothing_to_search_measures_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "search", lambda *a, **k: pytest.fail("timed although all was fixed"))
    monkeypatch.setattr(autotune, "memory_format", lambda device: torch.contiguous_format)
    monkeypatch.setattr(autotune, "options", lambda *a, **k: (START, {}))
    cfg = _config(precision="fp32")
    model = tr.Trainer(cfg, tmp_path / "run").model
    assert autotune.tune(model, cfg, CPU, training=True, batch=8).choice == START
    assert not autotune.cache_path().exists()


def test_winograd_is_searched_only_where_fp32_may_run(monkeypatch):
    """Its kernels are fp32: a configured bf16 leaves it out, an auto precision keeps it in."""
    monkeypatch.setattr(autotune.winograd, "available", lambda: True)
    _, found = autotune.options(_config(precision="bf16"), CPU, training=True, batch=8)
    assert "winograd" not in found
    start, found = autotune.options(_config(precision="fp32"), CPU, training=False, batch=8)
    assert start.winograd and found["winograd"] == (True, False)
    assert start.describe(CPU).endswith(" · winograd")


def test_a_bf16_choice_neither_runs_nor_shows_winograd(tmp_path):
    """Auto starts from Winograd where fp32 may win; when bf16 wins instead, the convolutions are
    torch's, and the window must not claim otherwise."""
    choice = Choice("bf16", "narrow", True, 8, winograd=True)
    model = tr.Trainer(_config(precision="fp32"), tmp_path / "run").model
    model.set_winograd(True)
    choice.apply(CPU, model)
    assert not any(getattr(m, "winograd", False) for m in model.modules())
    assert "winograd" not in choice.describe(CPU)
    assert Choice("fp32", "narrow", True, 8, winograd=True).describe(CPU).endswith("winograd · parts of 8")


@pytest.mark.parametrize("choice", [
    Choice("fp32", "chunked", True, 8), Choice("fp32", "sdpa", True, 8),
    pytest.param(Choice("fp32", "narrow", True, 8, winograd=True),
                 marks=pytest.mark.skipif(not winograd.available(), reason="no winograd kernels")),
    Choice("fp32", "sdpa", False, 4), Choice("fp32", "chunked", False, 4),
])
def test_every_candidate_computes_the_tutorial_step(tmp_path, choice):
    """Whatever tuning picks, a training step's loss and gradients are the tutorial's (naive
    kernel, NCHW, the batch whole) up to rounding."""
    cfg = _config(precision="fp32")
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    ref = tr.Trainer(cfg, tmp_path / "ref", attention_impl="naive")
    ref.model.to(memory_format=torch.contiguous_format)
    ref.memory_format = torch.contiguous_format
    ref_loss = ref._train_step(ref.model, images)
    tuned = tr.Trainer(cfg, tmp_path / "tuned")
    tuned.precision = choice.apply(CPU, tuned.model, tuned.ema_model)
    tuned.memory_format = torch.channels_last if choice.channels_last else torch.contiguous_format
    tuned.micro_batch_size = choice.micro_batch_size
    loss = tuned._train_step(tuned.model, images)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for (name, p), q in zip(ref.model.named_parameters(), tuned.model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_run_logs_and_announces_its_choice(tmp_path):
    events: list = []
    trainer = tr.Trainer(_config(precision="fp32", max_steps=2), tmp_path / "run",
                         dataset=_Noise(), on_event=events.append)
    trainer.run()
    started = next(e for e in events if isinstance(e, tr.Started))
    assert started.setup == trainer.tuned.choice.describe(CPU)
    assert started.setup.startswith(f"cpu · {torch.get_num_threads()} threads · fp32 · ")
    rows = RunDir(tmp_path / "run").read_log()
    assert [r["step"] for r in rows] == [1, 2]  # still one row per step; the first says how it ran
    assert rows[0]["autotune"]["setup"] == started.setup and "autotune" not in rows[1]


class _Noise:
    def __len__(self) -> int:
        return 16

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.rand(len(idx), 1, 16, 16) * 2 - 1


def test_sampling_is_tuned_too_and_keeps_a_configured_precision(tmp_path, monkeypatch):
    from core.device import Precision
    from core.sampling import SamplingModel

    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "machine_is_busy", lambda: False)
    cfg = _config(precision="fp32")
    model = SamplingModel(tr.Trainer(cfg, tmp_path / "run").ema_model, cfg, CPU, Precision(None)).tuned(4)
    assert model.precision.name == "fp32"
    assert model.setup.startswith("cpu · ") and model.setup.split(" · ")[3] in autotune.attention_kernels(CPU)
    assert autotune.cache_path().exists()
