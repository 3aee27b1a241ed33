"""``python -m glocal`` is the ``bench`` command."""

from glocal.benchmarks.cli import main

if __name__ == "__main__":
    main()
