"""The simulator: the real protocol cores at 10^5..10^6 nodes on a virtual clock (issue M6).

With PAGEMESH_COMPILED=1 its warm start (`simulations.oracle`) and its message path
(`engine`, `overlay`, `observe`, `lookups`) are the mypyc-compiled ones, as `dht/`'s
hot modules are (dht/compiled.py).
"""

from dht import compiled

_build = compiled.requested()
if _build is not None:
    compiled.use_compiled("simulations", __path__, _build)
