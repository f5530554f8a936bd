"""Settings for the whole suite.

Hypothesis's per-example deadline (200 ms by default) is a timing assertion,
and timing belongs in benchmarks/, not in tests: on a loaded 2-core CI machine
one slow example would fail a property that holds. Examples still run to
completion, and `max_examples` per test still bounds the work.
"""

from hypothesis import settings

settings.register_profile("pagemesh", deadline=None)
settings.load_profile("pagemesh")
