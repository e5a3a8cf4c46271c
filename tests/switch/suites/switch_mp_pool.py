"""CPython's own ``multiprocessing.pool`` tests, as a regrtest module for
``python -m plait run -m test --testdir tests/switch/suites switch_mp_pool``
(tests/switch/test_suites_futures.py runs it).

Nothing is copied: ``test._test_multiprocessing.install_tests_in_module_dict``
builds the test classes exactly as CPython's ``test_multiprocessing_<method>``
modules do (3.11 and 3.12 here do not ship those modules, only
``_test_multiprocessing``); only the pool classes are kept. Under the switch
the suite's ``multiprocessing.Pool`` / ``multiprocessing.dummy.Pool`` make
plait's pools, since both look ``multiprocessing.pool.Pool`` / ``ThreadPool``
up when called.

``PLAIT_SWITCH_POOL_START`` is the start method (``fork`` by default) the
module sets, as ``test_multiprocessing_<method>`` does.
"""

import os

import test._test_multiprocessing as _tm

_KEEP = ("TestPool", "TestPoolWorkerErrors", "TestPoolWorkerLifetime")
_TYPES = ("WithProcesses", "WithThreads")

_all: dict = {"__name__": __name__}
_tm.install_tests_in_module_dict(_all, os.environ.get("PLAIT_SWITCH_POOL_START", "fork"))
for _name, _obj in _all.items():
    if _name in ("setUpModule", "tearDownModule") or (
            _name.startswith(_TYPES) and _name.endswith(_KEEP)
            and _name.removeprefix("WithProcesses").removeprefix("WithThreads") in _KEEP):
        globals()[_name] = _obj
del _all, _name, _obj
