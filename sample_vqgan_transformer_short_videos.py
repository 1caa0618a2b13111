"""The release's name for ``sample_short_videos.py`` (same flags): sample videos of the training length.

See ``--help``.
"""

from tats.cli.sample import main

if __name__ == "__main__":
    main(long=False)
