"""The release's name for ``sample_long_videos.py`` (same flags): sample long videos with the sliding window.

See ``--help``.
"""

from tats.cli.sample import main

if __name__ == "__main__":
    main(long=True)
