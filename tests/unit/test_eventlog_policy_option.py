"""Row-policy options that reach the event log without the parser (Locust's web UI form)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from contract.options import OPTIONS
from contract.rowpolicy import RowPolicyConfig
from locustfiles.sio.logstate import policy_config


def test_a_web_ui_value_out_of_range_falls_back_to_the_defaults_once(caplog) -> None:
    """Locust's web UI form sets options without the parser's range check: record() must go on."""
    ns = SimpleNamespace(**{o.dest: o.cli_default for o in OPTIONS})
    ns.sio_sample_rate = 1.5
    env = SimpleNamespace(parsed_options=ns)
    with caplog.at_level(logging.ERROR):
        assert policy_config(env) == RowPolicyConfig()
        assert policy_config(env) == RowPolicyConfig()
    said = [r for r in caplog.records if "defaults are used" in r.getMessage()]
    assert len(said) == 1 and "sample" in said[0].getMessage()
