"""The thread controller's decisions, driven by made-up step times (no real timing)."""
from __future__ import annotations

from core import threads
from core.threads import MAX_TRY_SHARE, MIN_CPU_SHARE, PROBE_EVERY, PROBE_STEPS, ThreadController


class Machine:
    """Step times by thread count: idle, 2 threads twice as fast as 1; with a competitor on one
    of the two cores, 2 threads wait on the preempted one (3.1x) while 1 thread loses only the
    fair half (2x)."""

    loaded_times = {1: 2.0, 2: 3.1}

    def __init__(self) -> None:
        self.loaded = False

    def time(self, n: int) -> float:
        if self.loaded:
            return self.loaded_times[n]
        return {1: 1.9, 2: 1.0}[n]


class BusyMachine(Machine):
    """Beside another multi-threaded program: a step at 2 threads waits on a preempted thread at
    every one of its parallel regions (measured: 4-7 s at 2 threads against 0.15 s at one)."""

    loaded_times = {1: 2.0, 2: 60.0}


def drive(controller: ThreadController, machine: Machine, steps: int, cpu_share: float | None = None) -> list[int]:
    """Run ``steps`` steps; the thread count each ran at. With ``cpu_share``, each step at more
    than one thread also reports the process's CPU time: that share of its threads x its time
    (one thread always gets its core's whole time)."""
    used = []
    for _ in range(steps):
        n = controller.current
        used.append(n)
        seconds = machine.time(n)
        cpu = None if cpu_share is None else seconds * n * (cpu_share if n > 1 else 1.0)
        controller.record(seconds, cpu)
    return used


def test_idle_machine_keeps_all_threads_apart_from_brief_tries():
    c, m = ThreadController((2, 1), set_threads=lambda n: None), Machine()
    used = drive(c, m, 60)
    assert used[0] == 2
    assert used.count(1) <= 60 // PROBE_EVERY * PROBE_STEPS + PROBE_STEPS  # only the tries
    assert min(c.estimate, key=c.estimate.get) == 2


def test_where_the_threads_get_their_cores_it_never_tries_fewer():
    """Steps that used their threads' whole time were not preempted: one thread cannot win."""
    c, m = ThreadController((2, 1), set_threads=lambda n: None), Machine()
    assert set(drive(c, m, 200, cpu_share=0.99)) == {2}


def test_a_preempted_step_sets_off_a_try_of_one_thread_at_once():
    """Loaded from the start, no step looks slower than the stay's best, but its CPU time shows
    the preemption: one thread is tried after the first such step, not a periodic try later."""
    c, m = ThreadController((2, 1), set_threads=lambda n: None), BusyMachine()
    m.loaded = True
    used = drive(c, m, PROBE_STEPS + 2, cpu_share=MIN_CPU_SHARE - 0.2)
    assert used == [2] + [1] * (PROBE_STEPS + 1)


def test_where_the_cpu_time_is_unknown_the_periodic_try_finds_one_thread():
    c, m = ThreadController((2, 1), set_threads=lambda n: None), Machine()
    m.loaded = True
    used = drive(c, m, PROBE_EVERY + PROBE_STEPS + 1)
    assert used[:PROBE_EVERY] == [2] * PROBE_EVERY
    assert c.current == 1


def test_on_a_machine_whose_steps_look_preempted_when_idle_losing_tries_cost_little():
    """Where steps report a low CPU share with no competitor (one idle phase of bf16 training
    steps measured 0.78 of their threads' time, others 1.0), each try of one thread loses, and is
    paid back before the next."""
    c, m = ThreadController((2, 1), set_threads=lambda n: None), Machine()
    used = drive(c, m, 2000, cpu_share=MIN_CPU_SHARE - 0.1)
    assert used.count(1) > 0
    mean = sum(m.time(n) for n in used) / len(used)
    assert mean <= (1 + 2 * MAX_TRY_SHARE) * m.time(2)


def test_a_competitor_sends_it_to_one_thread_at_once_and_the_cost_stays_fair():
    c, m = ThreadController((2, 1), set_threads=lambda n: None), Machine()
    drive(c, m, 5)
    m.loaded = True
    used = drive(c, m, 60)
    assert used[:3] == [2, 2, 1]  # the second slow step sets off a try of one thread
    assert c.current == 1
    mean = sum(m.time(n) for n in used) / len(used)
    assert mean <= 2.5 * Machine().time(2)  # against the idle step at 2 threads


def test_it_returns_to_all_threads_when_the_machine_frees_up():
    c, m = ThreadController((2, 1), set_threads=lambda n: None), Machine()
    m.loaded = True
    drive(c, m, 30)
    assert c.current == 1
    m.loaded = False
    # the last try of 2 threads lost 3.1 - 2.0 s per step; it is paid back before the next
    payback_steps = PROBE_STEPS * (m.loaded_times[2] - m.loaded_times[1]) / MAX_TRY_SHARE / m.time(1)
    used = drive(c, m, int(payback_steps) + 2 * PROBE_STEPS + 2)
    assert c.current == 2 and used[-1] == 2


def test_beside_a_multithreaded_program_its_tries_of_more_threads_cost_little():
    c, m = ThreadController((2, 1), set_threads=lambda n: None), BusyMachine()
    m.loaded = True
    drive(c, m, PROBE_EVERY + PROBE_STEPS + 1)  # it starts loaded: the first try finds one thread
    assert c.current == 1
    used = drive(c, m, 2000)
    assert used.count(2) > 0  # it still looks, in case the machine frees up
    mean = sum(m.time(n) for n in used) / len(used)
    assert mean <= (1 + 2 * MAX_TRY_SHARE) * m.time(1)


def test_at_one_thread_a_slowdown_sets_off_no_try_of_more():
    c, m = ThreadController((2, 1), set_threads=lambda n: None), BusyMachine()
    m.loaded = True
    drive(c, m, PROBE_EVERY + PROBE_STEPS + 1)  # it starts loaded: the first try finds one thread
    used = [c.current]
    for _ in range(PROBE_EVERY - PROBE_STEPS - 2):  # before the next periodic try
        c.record(2.0 * m.time(1))  # more load: one thread slows down too
        used.append(c.current)
    assert set(used) == {1}


def test_one_noisy_step_does_not_move_it_for_long():
    c, m = ThreadController((2, 1), set_threads=lambda n: None), Machine()
    drive(c, m, 5)
    c.record(10.0)  # a hiccup at 2 threads
    assert drive(c, m, 3) == [2, 2, 2]


def test_step_sets_the_count_and_times_with_the_clock_given():
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 7.0])  # steps of 1, 3 and 3 s
    cpu_ticks = iter([0.0, 2.0, 2.0, 8.0, 8.0, 14.0])  # both threads busy throughout
    set_to: list[int] = []
    c = ThreadController((2, 1), set_threads=set_to.append, clock=lambda: next(ticks),
                         cpu_clock=lambda: next(cpu_ticks))
    for _ in range(3):
        with c.step():
            pass
    assert set_to == [2, 2, 2]
    assert c.current == 1  # 3 s twice after 1 s at 2 threads: slowed down, trying 1
    c.restore()
    assert set_to[-1] == c.initial


def test_a_single_count_never_switches():
    c = ThreadController((4,), set_threads=lambda n: None)
    for s in (1.0, 9.0, 1.0) * 20:
        assert c.record(s) == 4


def test_for_device_adapts_only_on_the_cpu():
    import torch

    assert len(threads.for_device(torch.device("cpu")).counts) == len({torch.get_num_threads(), 1})
    assert threads.for_device(torch.device("cuda")).counts == (torch.get_num_threads(),)
