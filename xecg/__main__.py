"""``python -m xecg``: the ``xecg`` command as a module, for launchers that run modules
(``torchrun -m xecg train ...``, see docs/multinode.md). Lightning's DDP launcher starts the other
ranks with ``python -m xecg.__main__`` and the same arguments."""

import sys

from xecg.cli import main

if __name__ == "__main__":
    sys.exit(main())
