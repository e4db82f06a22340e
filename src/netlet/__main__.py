"""``python -m netlet``: the ``netlet`` command, for when the script is not on PATH."""

from netlet.cli import main

if __name__ == "__main__":
    main(prog_name="netlet")
