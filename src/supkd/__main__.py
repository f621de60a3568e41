"""``python -m supkd`` (used by ``torchrun -m supkd train ...``)."""

from supkd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
