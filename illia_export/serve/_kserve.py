"""Import kserve on demand, without letting it read our command line.

Why: ``kserve.model_server`` parses ``sys.argv`` with its own argparse parser when it is
imported (``parser.parse_known_args()`` at module level) and sets module-wide defaults from
it; ``illia-export serve ...`` arguments are not meant for it. We import it with ``sys.argv``
reduced to the program name so its defaults are kserve's own. Only serving imports kserve,
so ``illia-export --help`` and the library never pay for it.
"""

from __future__ import annotations

import sys
from types import ModuleType


def import_kserve() -> ModuleType:
    """The ``kserve`` package (a ``MissingBackendError`` naming the ``serve`` extra if absent)."""
    if "kserve" in sys.modules:
        return sys.modules["kserve"]
    from illia_export.errors import require

    saved = sys.argv
    sys.argv = saved[:1]
    try:
        return require("kserve", "serve", "illia-export serve")
    finally:
        sys.argv = saved
