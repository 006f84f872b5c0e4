"""Settings for the whole suite.

Hypothesis: every property test and fuzzer is derandomized and keeps no example database, so a
run of the suite (CI's above all, on a fresh clone) tries the same cases every time and a
failure reproduces with the same command; the generated cases still number what each test asks.
"""

from hypothesis import settings

settings.register_profile("sioscale", derandomize=True, database=None)
settings.load_profile("sioscale")
