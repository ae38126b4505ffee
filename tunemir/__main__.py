"""Allow `python -m tunemir`."""

from tunemir.cli import main

if __name__ == "__main__":
    main(prog_name="tunemir")
