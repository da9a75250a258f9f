"""``python -m vlaforge.train ...`` and ``torchrun --nproc_per_node=N -m vlaforge.train ...``.

The same flags as ``vlaforge train`` (see ``python -m vlaforge.train --help``).
"""

from __future__ import annotations

import sys


def main() -> None:
    from vlaforge.training.commandline import main as run

    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
