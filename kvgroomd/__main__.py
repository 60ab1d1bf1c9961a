"""`python -m kvgroomd` and the `kvgroomd` console script.

This module imports nothing of kvgroomd's own dependencies before it can
report their absence: a broken installation (a dependency missing, or too
old to have what kvgroomd imports) ends with one line on stderr and exit
status 5, which the systemd units list in RestartPreventExitStatus= (a
restart cannot heal it). The same status for an ImportError raised later,
when a command imports what only it needs.
"""

from __future__ import annotations

import sys

EXIT_BROKEN_INSTALL = 5


def main() -> int:
    """Run the command line; exit status 5 when kvgroomd cannot be imported."""
    try:
        from kvgroomd.daemon._threads import handled_blocked  # noqa: PLC0415 - stdlib only

        # numpy's BLAS starts threads as numpy is imported: they must not
        # take the daemon's signals (daemon/_threads.py).
        with handled_blocked():
            import numpy  # noqa: F401, PLC0415
        from kvgroomd.cli import main as cli_main  # noqa: PLC0415 - guarded on purpose

        return cli_main()
    except ImportError as e:
        missing = f" (module {e.name})" if e.name else ""
        print(f"kvgroomd: broken installation: {e}{missing}; reinstall kvgroomd with its "
              "dependencies (pip install --force-reinstall kvgroomd)", file=sys.stderr)  # fmt: skip
        return EXIT_BROKEN_INSTALL


if __name__ == "__main__":
    sys.exit(main())
