"""``python -m edgeres`` works like the ``edgeres`` command (torchrun launches it this way)."""

from edgeres.cli import main

if __name__ == "__main__":
    main()
