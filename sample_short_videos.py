"""Sample videos of the training length from a TATS transformer; see `--help`."""

from tats.cli.sample import main

if __name__ == "__main__":
    main(long=False)
