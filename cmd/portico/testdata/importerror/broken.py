"""An app whose import fails: portico run must exit non-zero and show the traceback."""

import no_such_module_portico_e2e  # noqa: F401

application = None
