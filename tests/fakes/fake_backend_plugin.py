"""``SEGBENCH_PLUGINS=tests.fakes.fake_backend_plugin``: the fake backends, registered (child processes)."""

from segbench.backends import register_backend
from tests.fakes.fake_backend import SPECS

for spec in SPECS:
    register_backend(spec)
