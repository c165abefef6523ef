"""Thread counts that follow the machine's load, chosen by watching step times.

torch's CPU kernels split each operation over its threads and wait for the slowest at the
end. When another program takes one of two cores, one of our two threads is preempted for a
whole scheduler slice while the other spins at the barrier: a step then costs far more than
the fair half of the machine (3.1x instead of 2x with one competing process, measured). One
thread on the core we do get loses only the fair share.

Load cannot be read reliably (a load average lags by a minute and counts sleeping I/O), but
its effect can: the controller times each step at the thread count it runs, keeps a short
memory of each count's recent step time, runs the fastest, and now and then tries the others
for a couple of steps to notice when the machine has freed up (or filled up).

From more threads to fewer, such a try can only win when other programs take our cores, and
that shows without a try: the process then gets less CPU time than its threads x the step's
wall time. On an idle machine a sampling step of the tutorial's network at 2 threads used 0.99
of that, beside one CPU-bound program 0.60-0.67; every try of one thread on the idle machine
cost a step at 2.15-2.19 s instead of 1.1-1.3 s, twice, about 5% of the time at the rate the
tries' payback allows. So tries of fewer threads wait for steps that ran below
:data:`MIN_CPU_SHARE` of their threads' time (where the CPU time is known).

Those tries must stay cheap when they lose. Beside another multi-threaded program (a second
training run, measured on 2 cores), a step at 2 threads took 4-7 s where one thread took
0.15 s: trying 2 threads for 2 steps of every 14 made the two runs' steps 5.6 times slower
than at one thread. So a try's cost beyond the steps it replaced is paid back first: the next try
waits until the steps since have taken 1 / MAX_TRY_SHARE times that cost.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

PROBE_EVERY = 12  # steps between tries of the other thread counts
PROBE_STEPS = 2  # steps each try lasts
WINDOW = 3  # a count's estimate: the median of its last steps, so one hiccup moves nothing
SLOWDOWN = 1.5  # an estimate this much above the stay's best sets off a try at once (more threads only)
MAX_TRY_SHARE = 0.05  # losing tries cost at most this share of the time between them
MIN_CPU_SHARE = 0.85  # steps that got less of their threads' time were preempted: fewer may win


class ThreadController:
    """Picks the number of threads for each step from the times of the steps before it.

    Call :meth:`step` around every step, or :meth:`record` after each where the timing is done
    elsewhere. Decisions depend only on the times passed in, so the policy is tested with
    made-up timings. A count's estimate restarts with each stay at it: what was measured
    minutes ago, under other load, says little.
    """

    def __init__(self, counts: tuple[int, ...] | None = None, *,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.initial = torch.get_num_threads()
        self.counts = counts or tuple(sorted({self.initial, 1}, reverse=True))
        self._set_threads, self._clock, self._cpu_clock = set_threads, clock, cpu_clock
        self.current = self.counts[0]
        self.estimate: dict[int, float] = {}
        self._recent: list[float] = []  # this stay's last step times at ``current``
        self._recent_share: list[float] = []  # their CPU time over threads x wall time, where known
        self._stay_best = float("inf")
        self._since_probe = 0
        self._since_probe_s = 0.0  # seconds of steps since the last try
        self._try_cost = 0.0  # what the last try cost beyond the steps it replaced, in seconds
        self._to_try: list[int] | None = None  # while trying the other counts: those still to try
        self._incumbent_s = 0.0  # during a try: the step time of the count it may replace

    def record(self, seconds: float, cpu_seconds: float | None = None) -> int:
        """Take the time of the step just run at :attr:`current` (and the process's CPU time in
        it, where known); return the count for the next."""
        self._recent = [*self._recent, seconds][-WINDOW:]
        if cpu_seconds is not None and seconds > 0:
            self._recent_share = [*self._recent_share, cpu_seconds / (seconds * self.current)][-WINDOW:]
        estimate = self.estimate[self.current] = statistics.median_low(self._recent)
        self._stay_best = min(self._stay_best, estimate)
        self._since_probe += 1
        if self._to_try is not None:
            self._try_cost += max(0.0, seconds - self._incumbent_s)
            if len(self._recent) >= PROBE_STEPS:
                if self._to_try:
                    self._switch(self._to_try.pop(0))
                else:
                    self._to_try = None
                    self._switch(min(self.estimate, key=self.estimate.__getitem__))
            return self.current
        self._since_probe_s += seconds
        if len(self.counts) > 1 and (self._slowed_down(estimate) or self._try_due()):
            self._try_others()
        return self.current

    def _slowed_down(self, estimate: float) -> bool:
        """The machine just filled up under us: worth a try at once, but only from above the fewest
        threads, since more load never favours more threads."""
        return self.current != min(self.counts) and estimate > SLOWDOWN * self._stay_best

    def _try_due(self) -> bool:
        """Time to look around, once the last try's cost is paid back: above the fewest threads
        as soon as a step of this stay shows it was preempted, else (or where the CPU time is
        unknown) every :data:`PROBE_EVERY` steps. Preempted steps leave no time to wait: beside
        one CPU-bound program that the scheduler favours (the window's training runs at nice 10),
        a step of the tutorial's network at 2 threads took 22-31 s where one thread took 2-4 s,
        and a stay that began under that load has no faster step to compare with."""
        if MAX_TRY_SHARE * self._since_probe_s < self._try_cost:
            return False
        if self.current == min(self.counts):
            return self._since_probe >= PROBE_EVERY
        return self._preempted() and (bool(self._recent_share) or self._since_probe >= PROBE_EVERY)

    def _preempted(self) -> bool:
        """Whether this stay's steps got less CPU time than their threads could use (True where
        their CPU time is unknown)."""
        shares = self._recent_share
        return not shares or statistics.median_low(shares) < MIN_CPU_SHARE

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Run the enclosed step at the chosen thread count and learn from its time."""
        self._set_threads(self.current)
        start, cpu_start = self._clock(), self._cpu_clock()
        yield
        self.record(self._clock() - start, self._cpu_clock() - cpu_start)

    def restore(self) -> None:
        """Give the process back the thread count it had: the next user starts from that."""
        self._set_threads(self.initial)

    def __enter__(self) -> ThreadController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _try_others(self) -> None:
        self._since_probe, self._since_probe_s, self._try_cost = 0, 0.0, 0.0
        self._incumbent_s = self.estimate[self.current]
        others = [n for n in self.counts if n != self.current]
        self._to_try = others[1:]
        self._switch(others[0])

    def _switch(self, count: int) -> None:
        if count != self.current:
            self.current, self._recent, self._recent_share, self._stay_best = count, [], [], float("inf")


def for_device(device: torch.device) -> ThreadController:
    """A controller that adapts on the CPU; elsewhere the CPU threads only feed the device and
    keep the count they have."""
    return ThreadController() if device.type == "cpu" else ThreadController((torch.get_num_threads(),))
