"""`python -m textvae` is the `textvae` command, so `torchrun --nproc_per_node N -m textvae train ...` works."""

from textvae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
