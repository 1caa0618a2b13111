"""Quality over time of long videos: FVD / KVD of 16-frame windows at positions along them against real
training windows (and, on the moving digits, digit accuracy); docs/long_videos.md has flags and outputs.

    python scripts/eval_long_videos.py --gpt_ckpt sky-base --vqgan_ckpt sky --data_path data/sky \\
        --image_folder --resolution 128 --length 1024 --n_sample 256 --i3d release --save runs/long_sky
    python scripts/eval_long_videos.py --videos runs/long_sky/videos.h5 --data_path data/sky --image_folder
    python scripts/eval_long_videos.py --compare runs/a/quality.json runs/b/quality.json --save runs/ab
"""

from tats.cli.long_eval import main

if __name__ == "__main__":
    main()
