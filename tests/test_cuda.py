"""GPU-only checks (``pytest -m cuda``, run by ``scripts/gpu_check.sh``); skipped where CUDA is missing.

Each compares a CUDA path with the CPU's on tiny models: codes and I3D features (TF32 off), LPIPS of CPU
clips on a CUDA model, greedy sampling, and a few fp16 VQGAN steps with a loss scaler per optimizer.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
ROOT = Path(__file__).resolve().parents[1]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (float64)."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture
def lpips_dir(tmp_path) -> Path:
    """Seeded random VGG16 weights (non-negative heads) in the converted-file layout."""
    from tats.io.checkpoint import save_checkpoint
    from tats.io.fetch import SOURCES
    from tats.metrics.lpips import LPIPS

    torch.manual_seed(0)
    state = {k: (v.abs() if k.startswith("lin") else v) for k, v in LPIPS().state_dict().items()}
    path = tmp_path / "lpips" / SOURCES["lpips"].converted_name
    save_checkpoint({"state_dict": state, "meta": {"kind": "lpips"}}, path)
    return tmp_path / "lpips"


def test_vqgan_codes_on_cuda_match_the_cpu():
    """Without TF32 the encoder's latents agree to float32 rounding, so the codes agree."""
    from tats.precision import no_tf32
    from tests.tiny_models import CLIP_SHAPE, build_vqgan

    cpu = build_vqgan()
    gpu = copy.deepcopy(cpu).to(CUDA)
    video = torch.rand(8, *CLIP_SHAPE, generator=torch.Generator().manual_seed(0)) - 0.5
    with no_tf32(), torch.no_grad():  # as encode runs
        z_cpu, z_gpu = cpu.encode_latents(video), gpu.encode_latents(video.to(CUDA))
    assert _rel(z_gpu, z_cpu) < 1e-5
    assert torch.equal(gpu.encode(video.to(CUDA)).cpu(), cpu.encode(video))


def test_i3d_features_on_cuda_match_the_cpu():
    from tats.metrics.fvd import I3DFeatureExtractor
    from tats.metrics.i3d import InceptionI3d

    torch.manual_seed(0)
    model = InceptionI3d(400, 3, bn_eps=1e-3).eval()
    clips = torch.randint(0, 256, (2, 10, 32, 32, 3), dtype=torch.uint8)
    feats = {}
    for device in ("cpu", "cuda"):
        ext = I3DFeatureExtractor(model.to(device), batch_size=2, progress=False)
        ext.update(clips)
        feats[device] = torch.from_numpy(ext.compute())
        assert ext.numerics["tf32"] is False and ext.numerics["device"].startswith(device)
    assert _rel(feats["cuda"], feats["cpu"]) < 1e-4


def test_lpips_of_cpu_clips_on_a_cuda_model(lpips_dir):
    from tats.metrics.lpips import LPIPS
    from tats.metrics.recon import lpips_video

    model = LPIPS.pretrained(lpips_dir)
    x = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)
    cpu = lpips_video(x, y, model)
    gpu = lpips_video(x, y, copy.deepcopy(model).to(CUDA))
    assert gpu.device.type == "cuda" and _rel(gpu, cpu) < 1e-4


def test_predict_frames_on_cuda_with_lpips(tmp_path, lpips_dir, load_script):

    from tats.data.demo import make_demo_data
    from tests.tiny_models import save_transformer, save_vqgan

    demo = make_demo_data(tmp_path / "demo.h5", n_train=4, n_test=2, sequence_length=16, resolution=16,
                          progress=False)
    vqgan, gpt = save_vqgan(tmp_path / "vqgan.ckpt"), save_transformer(tmp_path / "gpt.ckpt", "label")
    predict = load_script("scripts/predict_frames.py")
    metrics = predict.main(["--gpt_ckpt", str(gpt), "--vqgan_ckpt", str(vqgan), "--data_path", str(demo),
                            "--n_observed", "2", "--n_frames", "12", "--n_sample", "2", "--greedy",
                            "--device", "cuda", "--lpips_cache_dir", str(lpips_dir), "--save", str(tmp_path),
                            "--save_name", "pred", "--no_progress"])
    saved = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert len(saved["per_clip"]["lpips"]) == 2 and np.isfinite(metrics["lpips"])


def test_greedy_long_sampling_on_cuda_equals_the_cpu(tmp_path):
    from tats.gpt.load import load_transformer
    from tats.sampling import sample_long
    from tests.tiny_models import save_transformer

    path = save_transformer(tmp_path / "gpt.ckpt", "label")
    cpu, gpu = load_transformer(path, with_vqgan=False), load_transformer(path, with_vqgan=False, device=CUDA)
    cond = torch.tensor([0, 3, 7])
    kw = dict(cond=cond, temporal_sample_pos=3, greedy=True, return_ids=True)
    ids_cpu = sample_long(cpu, 7, 3, **kw)
    assert torch.equal(sample_long(gpu, 7, 3, **kw).cpu(), ids_cpu)
    bf16 = sample_long(gpu, 7, 3, dtype=torch.bfloat16, **kw)
    assert bf16.shape == ids_cpu.shape and int(bf16.max()) < cpu.config.vocab_size


def test_release_greedy_on_cuda(fixtures_dir):
    from tats.gpt.load import load_transformer
    from tats.sampling import sample_long

    io = torch.load(fixtures_dir / "gpt_label_io.pt", weights_only=True)
    model = load_transformer(fixtures_dir / "gpt_label.ckpt", with_vqgan=False, device=CUDA)
    ids = sample_long(model, 5, 2, cond=io["cond"][:, 0], temporal_sample_pos=1, greedy=True, return_ids=True)
    assert torch.equal(ids.cpu(), io["long_greedy_ids"])


def test_vqgan_trains_in_fp16_with_a_loss_scaler_per_optimizer(tmp_path, lpips_dir):
    """train_vqgan.py --gpus 1 --precision 16 with accumulation, GAN and LPIPS from step 0: both optimizers
    step with their own CUDA GradScaler and no step is skipped."""
    import sys

    from tats.data.demo import make_demo_data
    from tats.train.scalers import PerOptimizerGradScaler

    sys.path.insert(0, str(ROOT))
    import train_vqgan

    demo = make_demo_data(tmp_path / "demo.h5", n_train=8, n_test=2, sequence_length=16, resolution=32,
                          progress=False)
    trainer, module = train_vqgan.main([
        "--gpus", "1", "--precision", "16", "--accumulate_grad_batches", "2", "--max_steps", "4",
        "--data_path", str(demo), "--default_root_dir", str(tmp_path / "run"), "--batch_size", "2",
        "--num_workers", "0", "--resolution", "32", "--sequence_length", "16", "--embedding_dim", "16",
        "--n_codes", "64", "--n_hiddens", "16", "--downsample", "2", "4", "4", "--disc_channels", "16",
        "--discriminator_iter_start", "0", "--perceptual_weight", "4", "--gan_feat_weight", "4",
        "--lpips_cache_dir", str(lpips_dir), "--gradient_clip_val", "1.0", "--limit_val_batches", "1",
        "--progress_bar_refresh_rate", "0", "--log_videos_every_n_steps", "0", "--no_resume"])
    plugin = trainer.precision_plugin
    assert isinstance(plugin, PerOptimizerGradScaler) and len(plugin.scalers) == 2
    assert all(s.is_enabled() for s in plugin.scalers)
    assert trainer.global_step == 4 and module.nonfinite_ae.total == module.nonfinite_disc.total == 0
    assert all(torch.isfinite(p).all() for p in module.parameters())
