"""Quality over time of long videos: FVD / KVD of 16-frame windows at positions along them, against real
training windows (and, on the built-in moving digits, the share of frames that show the conditioned digit).

    # sample 256 videos of 1,024 frames with the release's settings, then measure
    python scripts/eval_long_videos.py --gpt_ckpt sky-base --vqgan_ckpt sky --data_path data/sky \\
        --image_folder --resolution 128 --length 1024 --n_sample 256 --i3d release --save runs/long_sky
    # videos already generated: a .npy, an .h5 (videos.h5 of an earlier run) or a folder of videos
    python scripts/eval_long_videos.py --videos runs/long_sky/videos.h5 --data_path data/sky --image_folder
    # overlay earlier runs in one plot
    python scripts/eval_long_videos.py --compare runs/a/quality.json runs/b/quality.json --save runs/ab

Writes ``quality.json`` (per position: mean, std, min, max over ``--draws`` of FVD, KVD and digit accuracy;
real vs real), ``quality.csv``, ``quality.png``, ``along_video.png`` / ``.mp4`` and, when sampling,
``videos.h5``. See :mod:`tats.cli.long_eval` and :mod:`tats.metrics.long_video`.
"""

from tats.cli.long_eval import main

if __name__ == "__main__":
    main()
