"""The training steps read values back from the device no more than their guards need.

On a GPU each read of a tensor's value on the host (``.item()``, ``bool(t)``, ``.tolist()``) waits for
the device. The budget per step, from the rules: the VQGAN reads one flag per loss guard (autoencoder,
discriminators: non-finite on any rank, fp16 overflow included) and one pair of numbers from the codebook
(non-finite encoder outputs, number of codes to restart). Reads by ``torch.optim`` (step counters
kept on the host) are not syncs and not counted. The GPT reads one flag (its loss guard); class labels
are checked on the host before the batch moves to the device.
"""

from __future__ import annotations

import train_transformer
import train_vqgan
from tats.data.demo import make_demo_data
from tats.gpt.lightning import TransformerModule
from tats.vqgan.lightning import VQGANModule
from tests.host_reads import counting_method
from tests.tiny_models import save_vqgan

COMMON = ["--accelerator", "cpu", "--devices", "1", "--num_workers", "0", "--batch_size", "2",
          "--max_steps", "3", "--limit_val_batches", "0", "--num_sanity_val_steps", "0",
          "--progress_bar_refresh_rate", "0", "--no_resume"]
VQGAN = ["--embedding_dim", "8", "--n_codes", "32", "--n_hiddens", "16", "--downsample", "2", "4", "4",
         "--resolution", "16", "--sequence_length", "4", "--discriminator_iter_start", "0", "--disc_channels",
         "8", "--disc_layers", "2", "--log_videos_every_n_steps", "0", "--perceptual_weight", "0",
         "--norm_type", "batch"]
GPT = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--sequence_length", "8", "--resolution", "16",
       "--block_size", "16", "--base_lr", "1e-3"]


def test_vqgan_step_reads_three_values(tmp_path):
    demo = make_demo_data(tmp_path / "demo.h5", n_train=8, n_test=2, sequence_length=8, resolution=16,
                          progress=False)
    with counting_method(VQGANModule, "training_step") as calls:
        train_vqgan.main([*COMMON, *VQGAN, "--data_path", str(demo), "--default_root_dir",
                          str(tmp_path / "v")])
    assert len(calls) == 3
    totals = [sum(c.values()) for c in calls]
    # + at the first step the codebook's init flag (read, and read again at the second step, since the
    # init wrote it) and its non-finite test before the init
    assert totals == [5, 4, 3], calls
    assert all(c["nonzero"] == 0 for c in calls)


def test_gpt_step_reads_one_value(tmp_path):
    demo = make_demo_data(tmp_path / "demo.h5", n_train=8, n_test=2, sequence_length=8, resolution=16,
                          progress=False)
    vq = save_vqgan(tmp_path / "tiny_vqgan.ckpt")
    with counting_method(TransformerModule, "training_step") as calls:
        train_transformer.main([*COMMON, *GPT, "--vqvae", str(vq), "--data_path", str(demo),
                                "--default_root_dir", str(tmp_path / "g")])
    assert [sum(c.values()) for c in calls] == [1, 1, 1], calls
