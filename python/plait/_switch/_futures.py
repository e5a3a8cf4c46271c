"""The ``concurrent.futures`` part of the switch: ``ThreadPoolExecutor``,
``ProcessPoolExecutor``, ``wait`` and ``as_completed`` become plait's, in the
package and in the submodules they are defined in (``concurrent.futures.
thread``, ``.process``, ``._base``), so ``from concurrent.futures.thread
import ThreadPoolExecutor`` after the switch gets plait's too. asyncio's
default executor is made through ``concurrent.futures.ThreadPoolExecutor``,
so ``run_in_executor(None, ...)`` runs on plait's pool."""

from concurrent import futures as _cf
from concurrent.futures import _base, process, thread

import plait.futures as _pf


def apply(set_attr):
    set_attr(_cf, "ThreadPoolExecutor", _pf.ThreadPoolExecutor)
    set_attr(_cf, "ProcessPoolExecutor", _pf.ProcessPoolExecutor)
    set_attr(thread, "ThreadPoolExecutor", _pf.ThreadPoolExecutor)
    set_attr(process, "ProcessPoolExecutor", _pf.ProcessPoolExecutor)
    for module in (_cf, _base):
        set_attr(module, "wait", _pf.wait)
        set_attr(module, "as_completed", _pf.as_completed)
