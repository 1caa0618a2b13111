"""The release's name for ``sample_short_videos.py`` (same flags): sample videos of the training length.

See ``--help``.
"""

from tats.generate import main

if __name__ == "__main__":
    main(long=False)
