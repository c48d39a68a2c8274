"""`python -m lumos_ray` = the `lumos` command (used as Ray job entrypoint)."""

from lumos_ray.cli import main

if __name__ == "__main__":
    main()
