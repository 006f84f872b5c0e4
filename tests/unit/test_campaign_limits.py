"""`sioscale campaign --node-cpus/--node-memory-mb` override the file's [cluster] keys and their axis."""

from __future__ import annotations

import pytest

from sioscale.cli import main


def test_campaign_flags_limit_every_config_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaign", "campaigns/smoke.toml", "--dry-run", "--node-cpus", "0.5", "--node-memory-mb", "256"]) == 0
    names = [n for n in capsys.readouterr().out.split() if n.startswith("haproxy-")]
    assert len(names) == 4 and all(n.endswith("-cpu0.5-mem256") for n in names), names


def test_campaign_flag_out_of_range_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaign", "campaigns/smoke.toml", "--dry-run", "--node-cpus", "99"]) == 2
    assert "node_cpus" in capsys.readouterr().err
