"""The release's name for ``sample_long_videos.py`` (same flags): sample long videos with the sliding window.

See ``--help``.
"""

from tats.generate import main

if __name__ == "__main__":
    main(long=True)
