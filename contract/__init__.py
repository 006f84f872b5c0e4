"""The ground layer: what the load side, the system under test and the analysis share.

Stdlib only, and it imports nothing of this project but itself: `locustfiles/`, `targets/` and
`analysis/` each import it and never each other; `sioscale/` (the CLI, argument tables and runner)
sits on top and may import all of them. tests/unit/test_layers.py guards these rules and
docs/architecture.md draws them.

- `contract.wire`: wire constants and shared defaults (node header and cookies, the transports
  default, the generator saturation threshold);
- `contract.rows`: the run directory's CSV schemas (events*.csv rows, generator.csv);
- `contract.config`: the config schema (cluster, load, thresholds, campaigns);
- `contract.status`: the run status machine (meta.json, summary.json, exit codes);
- `contract.jsonfile`, `contract.environment`, `contract.fmt`, `contract.pdeathsig`: atomic JSON
  files, the environment record, the number normaliser, die-with-parent for child processes.
"""
