"""The command lines behind the root sampling scripts.

- :mod:`tats.cli.sample`: ``sample_short_videos.py`` / ``sample_long_videos.py`` (and the release's
  names for them): sample, write, and with ``--compute_fvd`` evaluate;
- :mod:`tats.cli.evaluate`: the FVD of a sampling run against real clips drawn as the release drew them;
- :mod:`tats.cli.common`: the sampling flags, checks, device, seed and run folder every sampler shares
  (the other samplers under ``scripts/`` use it too).
"""
