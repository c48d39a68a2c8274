"""Entry point of a simulation driver: the Ray job, or a process attached by address.

``python -m lumos_ray.federated._job CONFIG [--address ADDR] [--run-name NAME]``
(a separate module from ``_simulate`` so ``-m`` does not re-import a loaded module).
"""

from __future__ import annotations

import sys

from lumos_ray.federated._simulate import main

if __name__ == "__main__":
    sys.exit(main())
