"""Step load shape: add it to any scenario with `-f locustfiles/chat.py,locustfiles/steps.py`.

Each stage ramps to USERS at --spawn-rate, then holds for HOLD seconds; the capacity analysis
reads latency and failures over the holds only, so a hold should be much longer than its ramp
(a stage shorter than its ramp would never reach its user count).
"""

from __future__ import annotations

from locust import LoadTestShape

import locustfiles.sio.options  # noqa: F401  (registers --sio-steps)


def parse_steps(text: str) -> list[tuple[int, float]]:
    """'10:20,30:20' → [(10, 20.0), (30, 20.0)]; raises ValueError naming the bad stage."""
    steps = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            users, hold = part.split(":")
            stage = (int(users), float(hold))
        except ValueError:
            raise ValueError(f"--sio-steps: bad stage {part!r}, expected USERS:HOLD_SECONDS") from None
        if stage[0] < 1 or stage[1] <= 0:
            raise ValueError(f"--sio-steps: bad stage {part!r}, users >= 1 and hold > 0")
        steps.append(stage)
    return steps


class StepLoadShape(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()
        self._plan: list[tuple[float, int]] | None = None

    def _build(self) -> list[tuple[float, int]]:
        opts = self.runner.environment.parsed_options
        rate = float(opts.spawn_rate or 1)
        plan, t, prev = [], 0.0, 0
        for users, hold in parse_steps(opts.sio_steps or ""):
            t += abs(users - prev) / rate + hold  # the stage ends after its ramp and its hold
            plan.append((t, users))
            prev = users
        if not plan:
            raise ValueError("locustfiles/steps.py needs --sio-steps USERS:HOLD,...")
        return plan

    def tick(self):
        if self._plan is None:
            self._plan = self._build()
        now = self.get_run_time()
        for end, users in self._plan:
            if now < end:
                return users, float(self.runner.environment.parsed_options.spawn_rate or 1)
        return None
