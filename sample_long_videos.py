"""Sample long videos with the sliding window from a TATS transformer; see `--help`."""

from tats.cli.sample import main

if __name__ == "__main__":
    main(long=True)
