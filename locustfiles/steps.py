"""Step load shape: add it to any scenario with `-f locustfiles/chat.py,locustfiles/steps.py`.

Each stage ramps to USERS at --spawn-rate, then holds for HOLD seconds; the capacity analysis
reads latency and failures over the holds only, so a hold should be much longer than its ramp.
The timeline is contract.config.step_plan, the same one `sioscale run` sizes its time limit by.
"""

from __future__ import annotations

import logging
import sys

from locust import LoadTestShape, events

import locustfiles.sio.options  # noqa: F401  (registers --sio-steps)
from contract.config import ConfigError, parse_steps_text, step_plan
from contract.options import SioOptions

log = logging.getLogger(__name__)


def plan_from_options(opts) -> list[tuple[float, int]]:  # opts: Locust's parsed options
    """[(end_s, users)] from --sio-steps and --spawn-rate; ConfigError naming the bad stage."""
    steps = parse_steps_text(SioOptions.from_namespace(opts).steps, "--sio-steps")
    if not steps:
        raise ConfigError("locustfiles/steps.py needs --sio-steps USERS:HOLD_SECONDS,... (e.g. 10:30,20:30)")
    return step_plan(steps, float(getattr(opts, "spawn_rate", None) or 1))


class StepLoadShape(LoadTestShape):
    use_common_options = True  # it reads --spawn-rate (Locust would otherwise warn it is ignored)
    def __init__(self) -> None:
        super().__init__()
        self._plan: list[tuple[float, int]] | None = None

    def tick(self):
        if self._plan is None:
            self._plan = plan_from_options(self.runner.environment.parsed_options)
        now = self.get_run_time()
        for end, users in self._plan:
            if now < end:
                return users, float(self.runner.environment.parsed_options.spawn_rate or 1)
        return None


@events.init.add_listener
def _check_steps(environment, **_kwargs) -> None:  # environment: Locust's Environment
    """A bad --sio-steps stops Locust at start with one line and exit code 2.

    Why here: tick() first runs in the runner's greenlet, where an error is a traceback and the
    run goes on with no load. Workers take the shape from the master, so only it checks.
    """
    opts = environment.parsed_options
    if opts is None or getattr(opts, "worker", False) or not isinstance(environment.shape_class, StepLoadShape):
        return
    try:
        plan_from_options(opts)
    except ConfigError as e:
        log.error("%s", e)
        sys.stderr.flush()
        sys.exit(2)
