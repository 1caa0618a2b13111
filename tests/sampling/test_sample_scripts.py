"""Smoke runs of the sampling command lines on tiny checkpoints (flags as the seed READMEs write them).

``sample_short_videos.py`` / ``sample_long_videos.py`` are ``tats.cli.sample.main(argv, long=...)``;
the other scripts under ``scripts/`` are imported from their files and their ``main(argv)`` called.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tats.cli.sample import main
from tests.tiny_models import CLIP_SHAPE, N_CLASSES, save_transformer, save_vqgan

ROOT = Path(__file__).resolve().parents[2]
N_FRAMES = CLIP_SHAPE[1]  # pixel frames of one training clip of the tiny models
DT = 2  # the tiny VQGAN's temporal downsampling


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    out = {"vqgan": save_vqgan(d / "vqgan.ckpt"),
           "vqgan_release": save_vqgan(d / "vqgan_rel.ckpt", "release")}
    for kind in ("label", "none", "text", "ar", "interp"):
        out[kind] = save_transformer(d / f"gpt_{kind}.ckpt", kind)
    out["label_novq"] = save_transformer(d / "gpt_label_novq.ckpt", "label", with_vqgan=False)
    return out


def run(argv: list[str], long: bool = False) -> tuple[dict, Path]:
    """``main`` with CPU and no progress bars; returns the summary and the output folder."""
    summary = main([*argv, "--device", "cpu", "--no_progress"], long=long)
    save = Path(argv[argv.index("--save") + 1])
    if "--save_name" in argv:
        return summary, save / argv[argv.index("--save_name") + 1]
    folders = [p for p in save.iterdir() if (p / "summary.json").is_file()]
    assert len(folders) == 1, folders
    return summary, folders[0]


def check_outputs(out: Path, n: int, t: int, hw: int = CLIP_SHAPE[2]) -> np.ndarray:
    samples = np.load(out / "samples.npy")
    assert samples.dtype == np.uint8 and samples.shape == (n, t, hw, hw, 3)
    for name in ("grid.mp4", "grid.gif", "contact_sheet.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_sample"] == n and summary["video_shape"] == [t, hw, hw, 3]
    return samples


class _TinyI3D(torch.nn.Module):
    """Random stand-in for I3D: (B, 3, T, 224, 224) in [-1, 1] -> (B, 400) features."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, (1, 4, 4)).flatten(1)  # (B, 48)
        return self.proj(pooled)


@pytest.fixture
def tiny_fvd(monkeypatch, tmp_path):
    """Random I3D instead of the fetched weights; the 'demo' data at 16 px with a few clips."""
    import tats.data.demo
    import tats.data.sources
    import tats.metrics.i3d

    calls = []

    def load_i3d(path=None, cache_dir=None, bn_eps=None, device="cpu"):
        calls.append(path)
        torch.manual_seed(0)
        return _TinyI3D().eval().to(device)

    real_make = tats.data.demo.make_demo_data

    def make_demo_data(**kw):
        return real_make(tmp_path / "demo.h5", n_train=6, n_test=2, sequence_length=kw["sequence_length"],
                         resolution=16, progress=False)

    monkeypatch.setattr(tats.metrics.i3d, "load_i3d", load_i3d)
    monkeypatch.setattr(tats.data.sources, "make_demo_data", make_demo_data)
    return calls


# ------------------------------------------------------------------------------------ short videos
def test_short_readme_command_with_fvd(ckpts, tmp_path, tiny_fvd):
    # seed 004: --gpt_ckpt --vqgan_ckpt --class_cond --save --data_path --batch_size 16 --resolution 128
    #           --top_k 2048 --top_p 0.8 --dataset --compute_fvd --save_videos (plus a small --n_sample)
    # (--top_k 2048 is for a 16k vocabulary; the tiny model has 36 tokens)
    with pytest.warns(UserWarning, match="5 generated vs 6 real clips is not comparable with published"):
        summary, out = run([
            "--gpt_ckpt", str(ckpts["label_novq"]), "--vqgan_ckpt", str(ckpts["vqgan"]), "--class_cond",
            "--save", str(tmp_path / "res"), "--data_path", "demo", "--batch_size", "2", "--resolution", "16",
            "--top_k", "30", "--top_p", "0.8", "--dataset", "ucf101", "--compute_fvd", "--save_videos",
            "--n_sample", "5",
        ])
    samples = check_outputs(out, 5, N_FRAMES)
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"{i:05d}.mp4" for i in range(5)]
    fvd = summary["fvd"]
    assert np.isfinite(fvd["fvd"]) and fvd["fvd"] > 0 and np.isfinite(fvd["kvd"])
    assert json.loads((out / "summary.json").read_text())["fvd"] == fvd
    # the release's real set by default: 2048 clips drawn over the training windows (the tiny demo has 6)
    assert (fvd["n_fake"], fvd["n_real"], fvd["n_real_requested"], fvd["real_available"]) == (5, 6, 2048, 6)
    assert (fvd["real_split"], fvd["real_seed"], fvd["real_selection"]) == ("train", 0, "random")
    assert fvd["uint8"] == summary["uint8"] == "truncate" and "not comparable" in fvd["warning"]
    assert tiny_fvd == [None]  # one I3D, the default weights
    assert samples.dtype == np.uint8


@pytest.mark.parametrize("protocol, rule", [("tats", np.floor), ("styleganv", np.round)])
def test_samples_are_uint8_as_the_fvd_protocol_has_it(ckpts, tmp_path, protocol, rule):
    """Protocol tats truncates (the release's astype(np.uint8)), styleganv rounds."""
    from tats.gpt.load import load_transformer
    from tats.sampling import sample_short

    _, out = run(["--gpt_ckpt", str(ckpts["none"]), "--greedy", "--n_sample", "2", "--batch_size", "2",
                  "--fvd_protocol", protocol, "--save", str(tmp_path)])
    model = load_transformer(ckpts["none"])
    with torch.no_grad():
        video = model.decode(sample_short(model, 2, None, greedy=True)).double()  # (2, C, T, H, W)
    levels = ((video.clamp(-0.5, 0.5) + 0.5) * 255).permute(0, 2, 3, 4, 1).numpy()  # (2, T, H, W, C)
    frac = levels - np.floor(levels)
    clear = (np.abs(frac - 0.5) > 0.01) & (frac > 0.01) & (frac < 0.99)  # away from float ties
    assert (np.floor(levels) != np.round(levels))[clear].sum() >= 10  # the two rules differ here
    assert np.array_equal(np.load(out / "samples.npy")[clear], rule(levels[clear]).astype(np.uint8))


def test_short_seed002_command_unconditional(ckpts, tmp_path):
    # seed 002: --gpt_ckpt --vqgan_ckpt --save_name --n_sample 64 --batch_size 16 --resolution 256
    summary, out = run([
        "--gpt_ckpt", str(ckpts["none"]), "--vqgan_ckpt", str(ckpts["vqgan_release"]),
        "--save_name", "uncond", "--n_sample", "3", "--batch_size", "2", "--resolution", "256",
        "--save", str(tmp_path),
    ])
    assert out == tmp_path / "uncond"
    check_outputs(out, 3, N_FRAMES)
    assert not (out / "videos").exists() and summary["tokens_per_s"] > 0


def test_greedy_reproducible_and_seed_changes_samples(ckpts, tmp_path):
    base = ["--gpt_ckpt", str(ckpts["label"]), "--n_sample", "4", "--batch_size", "4",
            "--save", str(tmp_path)]
    _, a = run([*base, "--greedy", "--save_name", "g1", "--seed", "0"])
    _, b = run([*base, "--greedy", "--save_name", "g2", "--seed", "5"])
    assert np.array_equal(np.load(a / "samples.npy"), np.load(b / "samples.npy"))
    _, c = run([*base, "--save_name", "s0", "--seed", "0"])
    _, d = run([*base, "--save_name", "s0b", "--seed", "0"])
    _, e = run([*base, "--save_name", "s1", "--seed", "1"])
    s0, s1 = np.load(c / "samples.npy"), np.load(e / "samples.npy")
    assert np.array_equal(s0, np.load(d / "samples.npy"))  # same seed, same samples
    assert not np.array_equal(s0, s1)


def test_compiled_sampling_script_matches_eager_and_reports_the_first_batch_apart(ckpts, tmp_path):
    base = ["--gpt_ckpt", str(ckpts["label"]), "--n_sample", "4", "--batch_size", "2", "--greedy",
            "--save", str(tmp_path)]
    _, eager = run([*base, "--save_name", "eager"])
    summary, compiled = run([*base, "--save_name", "compiled", "--compile"])
    assert np.array_equal(np.load(eager / "samples.npy"), np.load(compiled / "samples.npy"))
    assert summary["settings"]["compile"] is True
    assert summary["first_batch_seconds"] > 0 and summary["steady_tokens_per_s"] > 0  # two batches


def test_release_fixture_short(fixtures_dir, tmp_path):
    """The release's transformer file (VQGAN inside) with the README's sampling flags, and greedy
    decoding reproducing the release's greedy ids (labels cycle 0..4, the fixture used 1 and 4)."""
    gpt = fixtures_dir / "gpt_label.ckpt"
    with pytest.raises(SystemExit, match="--top_k 2048 exceeds the vocabulary size 53"):
        run(["--gpt_ckpt", str(gpt), "--class_cond", "--top_k", "2048", "--top_p", "0.8",
             "--n_sample", "2", "--batch_size", "2", "--save", str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()  # refused before any work
    _, out = run(["--gpt_ckpt", str(gpt), "--class_cond", "--top_k", "40", "--top_p", "0.8",
                  "--n_sample", "2", "--batch_size", "2", "--save", str(tmp_path / "a")])
    check_outputs(out, 2, 8, 32)

    _, out = run(["--gpt_ckpt", str(gpt), "--class_cond", "--greedy", "--n_sample", "5",
                  "--batch_size", "5", "--save", str(tmp_path / "b")])
    samples = check_outputs(out, 5, 8, 32)
    from tats.gpt.load import load_transformer
    from tats.io.video import to_uint8

    io = torch.load(fixtures_dir / "gpt_label_io.pt")
    assert io["cond"].flatten().tolist() == [1, 4]
    model = load_transformer(gpt)
    with torch.no_grad():
        expected = to_uint8(model.decode(model.ids_to_codes(io["greedy_ids"], model.latent_shape)))
    diff = np.abs(samples[[1, 4]].astype(int) - expected.astype(int))
    assert diff.max() <= 1  # same codes; float rounding of the decode may move a pixel by one level


# ------------------------------------------------------------------------------------- long videos
def test_long_readme_command(ckpts, tmp_path):
    # seed 004: --gpt_ckpt --vqgan_ckpt --dataset ucf101 --class_cond --sample_length 16
    #           --temporal_sample_pos 1 --batch_size 5 --n_sample 5 --save_videos
    summary, out = run([
        "--gpt_ckpt", str(ckpts["label"]), "--vqgan_ckpt", str(ckpts["vqgan"]), "--dataset", "ucf101",
        "--class_cond", "--sample_length", "16", "--temporal_sample_pos", "1", "--batch_size", "5",
        "--n_sample", "5", "--save_videos", "--save", str(tmp_path),
    ], long=True)
    check_outputs(out, 5, 16 * DT)
    assert len(list((out / "videos").glob("*.mp4"))) == 5 and summary["mode"] == "long"


def test_long_seed002_command_spatial_window(ckpts, tmp_path):
    # seed 002: --save_name --n_sample 64 --batch_size 16 --sample_length 64 --sample_resolution 16
    #           --temporal_sample_pos 1 (latent sizes scaled down to the tiny model)
    _, out = run([
        "--gpt_ckpt", str(ckpts["none"]), "--vqgan_ckpt", str(ckpts["vqgan"]), "--save_name", "wide",
        "--n_sample", "2", "--batch_size", "2", "--sample_length", "5", "--sample_resolution", "3",
        "--temporal_sample_pos", "1", "--greedy", "--save", str(tmp_path),
    ], long=True)
    check_outputs(out, 2, 5 * DT, 3 * 8)  # 3x3 latent -> 24x24 pixels


def test_npy_stream_writer(tmp_path):
    from tats.io.samples import NpyStreamWriter

    data = np.random.default_rng(0).integers(0, 256, (5, 2, 3, 3, 3), dtype=np.uint8)
    w = NpyStreamWriter(tmp_path / "a.npy", data.shape)
    w.write(data[:2])
    w.write(data[2:])
    w.close()
    assert np.array_equal(np.load(tmp_path / "a.npy"), data)
    assert np.array_equal(np.load(tmp_path / "a.npy", mmap_mode="r")[3], data[3])
    w = NpyStreamWriter(tmp_path / "b.npy", data.shape)
    with pytest.raises(ValueError, match="expected uint8 rows of shape"):
        w.write(data[:, :1])
    with pytest.raises(ValueError, match="exceed the declared 5"):
        w.write(np.concatenate([data, data[:1]]))
    w.write(data[:4])
    with pytest.raises(ValueError, match="wrote 4 of 5 rows"):
        w.close()


# --------------------------------------------------------------------------------------- bad flags
@pytest.mark.parametrize("extra, long, match", [
    (["--top_k", "-1"], False, "--top_k must be >= 0"),
    (["--top_p", "1.5"], False, "--top_p must lie in"),
    (["--temporal_sample_pos", "4"], True, r"--temporal_sample_pos must lie in \[1, 3\]"),
    (["--temporal_sample_pos", "0"], True, r"--temporal_sample_pos must lie in \[1, 3\]"),
    (["--class_cond"], False, "--class_cond given but .* conditioned on 'none'"),
    (["--text", "a digit"], False, "--text given but"),
    (["--label", "25"], False, "--label must lie in"),
])
def test_bad_flags_fail_fast(ckpts, tmp_path, extra, long, match):
    gpt = ckpts["label"] if "--label" in extra else ckpts["none"]
    with pytest.raises(SystemExit, match=match):
        main(["--gpt_ckpt", str(gpt), "--save", str(tmp_path), "--device", "cpu", *extra], long=long)
    assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize("flag", ["--gpt_ckpt", "--vqgan_ckpt", "--i3d_path"])
def test_missing_files_name_the_flag(ckpts, tmp_path, flag):
    argv = {"--gpt_ckpt": str(ckpts["none"])}
    argv[flag] = str(tmp_path / "missing.ckpt")
    flat = [x for kv in argv.items() for x in kv]
    with pytest.raises(SystemExit, match=f"{flag} .*missing.ckpt: file not found"):
        main([*flat, "--save", str(tmp_path)])


def test_fvd_needs_data_and_text_models_need_text(ckpts, tmp_path):
    with pytest.raises(SystemExit, match="--compute_fvd needs --data_path"):
        main(["--gpt_ckpt", str(ckpts["none"]), "--compute_fvd", "--save", str(tmp_path)])
    with pytest.raises(SystemExit, match="--data_path .*nowhere: no such file"):
        main(["--gpt_ckpt", str(ckpts["none"]), "--compute_fvd", "--data_path", str(tmp_path / "nowhere"),
              "--save", str(tmp_path)])
    with pytest.raises(SystemExit, match="text-conditioned: pass --text"):
        main(["--gpt_ckpt", str(ckpts["text"]), "--save", str(tmp_path), "--device", "cpu"])


def test_text_model_through_generate(ckpts, tmp_path):
    summary, out = run(["--gpt_ckpt", str(ckpts["text"]), "--text", "digit 3 is moving up and down",
                        "--text", "digit 1 is moving left and right", "--n_sample", "2", "--greedy",
                        "--save", str(tmp_path)])
    samples = check_outputs(out, 2, N_FRAMES)
    assert summary["n_sample"] == 2 and samples.std() > 0
    assert N_CLASSES == 20  # the label model's classes = the demo data's (predict_frames uses them)


# ------------------------------------------------------------------------------------ scripts/*.py
@pytest.fixture(scope="module")
def demo_h5(tmp_path_factory) -> Path:
    from tats.data.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "digits.h5", n_train=4, n_test=3,
                          sequence_length=16, resolution=16, progress=False)


def test_predict_frames_script(ckpts, demo_h5, tmp_path, load_script):
    predict = load_script("scripts/predict_frames.py")
    # BAIR-style 1 -> 12 frames: 1 observed latent frame, the rest sampled, beyond the 8-frame window
    metrics = predict.main([
        "--gpt_ckpt", str(ckpts["label"]), "--vqgan_ckpt", str(ckpts["vqgan"]), "--data_path", str(demo_h5),
        "--n_observed", "1", "--n_frames", "12", "--n_sample", "3", "--batch_size", "2", "--greedy",
        "--save", str(tmp_path), "--save_name", "pred", "--device", "cpu", "--no_progress", "--no_lpips",
    ])
    out = tmp_path / "pred"
    real, pred = np.load(out / "real.npy"), np.load(out / "predicted.npy")
    assert real.shape == pred.shape == (3, 12, 16, 16, 3) and real.dtype == np.uint8
    assert np.array_equal(real[:, :1], pred[:, :1])  # the observed frame is kept
    assert not np.array_equal(real[:, 1:], pred[:, 1:])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["predicted_frames"] == 11 and len(saved["per_clip"]["psnr"]) == 3
    # the reported numbers are the metrics of the predicted frames only
    from tats.metrics.recon import psnr, ssim

    x = torch.from_numpy(real[:, 1:]).permute(0, 4, 1, 2, 3)
    y = torch.from_numpy(pred[:, 1:]).permute(0, 4, 1, 2, 3)
    assert metrics["psnr"] == pytest.approx(psnr(x, y).mean().item(), rel=1e-5)
    assert metrics["ssim"] == pytest.approx(ssim(x, y).mean().item(), rel=1e-5)
    assert "lpips" not in metrics and "--no_lpips" in metrics["lpips_note"]
    for name in ("grid.mp4", "grid.gif", "contact_sheet.png"):
        assert (out / name).stat().st_size > 0
    # the conditioning is the clip's own label: a greedy rerun gives the same clips (same batches: the
    # float rounding of the head's matmul may depend on the batch size, and greedy ties with it)
    predict.main(["--gpt_ckpt", str(ckpts["label"]), "--vqgan_ckpt", str(ckpts["vqgan"]), "--data_path",
                  str(demo_h5), "--n_observed", "1", "--n_frames", "12", "--n_sample", "3", "--greedy",
                  "--batch_size", "2",
                  "--save", str(tmp_path), "--save_name", "pred2", "--device", "cpu", "--no_progress",
                  "--no_lpips"])
    assert np.array_equal(np.load(tmp_path / "pred2" / "predicted.npy"), pred)


class MetaDeviceLPIPS(torch.nn.Module):
    """Stands in for an LPIPS on a GPU: it lives on the meta device, refuses inputs from elsewhere as
    a convolution there would, and scores every frame pair 0.25 (meta tensors hold no values)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1, device="meta"))
        self.seen: set[str] = set()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.seen |= {x.device.type, y.device.type}
        for t in (x, y):
            if t.device != self.anchor.device:
                raise RuntimeError(f"Tensor on device {t.device} is not on the expected device meta!")
        return torch.full((x.shape[0], 1, 1, 1), 0.25)


def test_predict_frames_gives_lpips_frames_on_its_device(ckpts, demo_h5, tmp_path, monkeypatch, load_script):
    """The clips are uint8 on the CPU while LPIPS sits on the sampling device (a GPU in practice)."""
    predict = load_script("scripts/predict_frames.py")
    lpips = MetaDeviceLPIPS()
    monkeypatch.setattr(predict, "load_lpips", lambda args, device: (lpips, None))
    metrics = predict.main([
        "--gpt_ckpt", str(ckpts["label"]), "--vqgan_ckpt", str(ckpts["vqgan"]), "--data_path", str(demo_h5),
        "--n_observed", "1", "--n_frames", "8", "--n_sample", "2", "--batch_size", "2", "--greedy",
        "--save", str(tmp_path), "--save_name", "pred", "--device", "cpu", "--no_progress",
    ])
    assert lpips.seen == {"meta"}
    assert metrics["per_clip"]["lpips"] == [0.25, 0.25] and metrics["lpips"] == 0.25


def test_predict_frames_bad_flags(ckpts, demo_h5, tmp_path, load_script):
    predict = load_script("scripts/predict_frames.py")
    base = ["--gpt_ckpt", str(ckpts["none"]), "--data_path", str(demo_h5), "--save", str(tmp_path)]
    with pytest.raises(SystemExit, match="--n_observed must lie in"):
        predict.main([*base, "--n_observed", "8", "--n_frames", "8"])
    with pytest.raises(SystemExit, match="--resolution 32: the transformer was trained on 2x2"):
        predict.main([*base, "--resolution", "32"])
    with pytest.raises(SystemExit, match="sparse frame grid"):
        predict.main([*base[:1], str(ckpts["ar"]), *base[2:]])


def test_hierarchical_readme_command(ckpts, tmp_path, load_script):
    hier = load_script("scripts/sample_hierarchical.py")
    # release README: --ckpt1 --CKPT2 --vqgan --dataset sky --top_k_init 2048 --top_p_init 0.8
    #                 --top_k 2048 --top_p 0.8 --temporal_sample_pos 1 (plus a small run)
    # (top-k values scaled down from 2048 to the tiny models' 16-token vocabulary)
    summary = hier.main([
        "--ckpt1", str(ckpts["ar"]), "--CKPT2", str(ckpts["interp"]), "--vqgan", str(ckpts["vqgan"]),
        "--dataset", "sky", "--top_k_init", "16", "--top_p_init", "0.8", "--top_k", "12",
        "--top_p", "0.8", "--temporal_sample_pos", "1", "--sample_length", "3", "--n_sample", "3",
        "--batch_size", "2", "--save", str(tmp_path), "--save_name", "h", "--device", "cpu",
        "--no_progress",
    ])
    # K = 3 sparse latent frames, s = 2 -> 5 latent frames -> 10 pixel frames
    assert summary["latent_frames"] == 5
    check_outputs(tmp_path / "h", 3, 5 * DT)
    # greedy: the script's videos are the package's hierarchical sample, decoded
    from tats.gpt.load import load_transformer
    from tats.io.video import to_uint8
    from tats.sampling import sample_hierarchical

    hier.main(["--ckpt1", str(ckpts["ar"]), "--ckpt2", str(ckpts["interp"]), "--sample_length", "3",
               "--n_sample", "2", "--greedy", "--save", str(tmp_path), "--save_name", "g", "--device", "cpu",
               "--no_progress"])
    ar, interp = load_transformer(ckpts["ar"]), load_transformer(ckpts["interp"])
    codes = sample_hierarchical(ar, interp, 3, 2, temporal_sample_pos=1, greedy=True)  # (2, 5, 2, 2)
    with torch.no_grad():
        expected = to_uint8(ar.decode(codes))  # (2, 10, 16, 16, 3)
    got = np.load(tmp_path / "g" / "samples.npy")
    assert got.shape == expected.shape == (2, 10, 16, 16, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # decode rounding only


def test_hierarchical_bad_flags(ckpts, tmp_path, load_script):
    hier = load_script("scripts/sample_hierarchical.py")
    base = ["--save", str(tmp_path), "--device", "cpu"]
    with pytest.raises(SystemExit, match="--ckpt2 .* is not an interpolation transformer"):
        hier.main(["--ckpt1", str(ckpts["ar"]), "--ckpt2", str(ckpts["none"]), *base])
    with pytest.raises(SystemExit, match="--ckpt1 .* not trained on a sparse frame grid"):
        hier.main(["--ckpt1", str(ckpts["none"]), "--ckpt2", str(ckpts["interp"]), *base])
    with pytest.raises(SystemExit, match=r"--temporal_sample_pos must lie in \[1, 1\]"):
        hier.main(["--ckpt1", str(ckpts["ar"]), "--ckpt2", str(ckpts["interp"]), "--sample_length", "5",
                   "--temporal_sample_pos", "2", *base])
    with pytest.raises(SystemExit, match="--ckpt2 .*nope.ckpt: file not found"):
        hier.main(["--ckpt1", str(ckpts["ar"]), "--ckpt2", str(tmp_path / "nope.ckpt"), *base])


def test_text_cond_script(ckpts, tmp_path, load_script):
    text = load_script("scripts/sample_text_cond.py")
    captions = ["digit 3 is moving up and down", "digit 1 is moving left and right"]
    summary = text.main(["--gpt_ckpt", str(ckpts["text"]), "--text", captions[0], "--text", captions[1],
                         "--n_sample", "2", "--batch_size", "3", "--greedy", "--save", str(tmp_path),
                         "--save_name", "t", "--device", "cpu", "--no_progress"])
    samples = check_outputs(tmp_path / "t", 4, N_FRAMES)
    assert json.loads((tmp_path / "t" / "captions.json").read_text()) == [captions[0]] * 2 + [captions[1]] * 2
    assert summary["n_sample"] == 4
    # greedy: each video is the package's greedy sample for its own caption
    from tats.gpt.load import load_transformer
    from tats.io.video import to_uint8
    from tats.sampling import sample_short

    model = load_transformer(ckpts["text"])
    for i, caption in enumerate([captions[0]] * 2 + [captions[1]] * 2):
        with torch.no_grad():
            expected = to_uint8(model.decode(sample_short(model, 1, caption, greedy=True)))[0]
        assert np.abs(samples[i].astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(SystemExit, match="not on text"):
        text.main(["--gpt_ckpt", str(ckpts["label"]), "--text", "x", "--save", str(tmp_path)])


def test_audio_cond_script(tmp_path, monkeypatch, load_script):
    from tats.data.audio import write_tone_video

    ckpt = save_transformer(tmp_path / "gpt_audio.ckpt", "audio")
    for split, names in (("train", ["a"]), ("test", ["b", "c"])):
        (tmp_path / "drums" / split / "kick").mkdir(parents=True)
        for i, name in enumerate(names):
            write_tone_video(tmp_path / "drums" / split / "kick" / f"{name}.mp4", freq_hz=300.0 + 400 * i,
                             seconds=1.5, fps=8, size=16)
    audio = load_script("scripts/sample_audio_cond.py")
    # release README: --gpt_ckpt --vqgan_ckpt --stft_vqgan_ckpt --dataset drum --n_sample 10
    # (the STFT VQGAN here is the one stored inside the transformer checkpoint)
    summary = audio.main(["--gpt_ckpt", str(ckpt), "--dataset", "drum", "--n_sample", "2",
                          "--data_path", str(tmp_path / "drums"), "--greedy", "--save", str(tmp_path),
                          "--save_name", "au", "--device", "cpu", "--no_progress"])
    out = tmp_path / "au"
    check_outputs(out, 2, N_FRAMES)
    assert np.load(out / "real.npy").shape == (2, N_FRAMES, 16, 16, 3)
    assert [Path(p).name for p in json.loads((out / "sources.json").read_text())] == ["b.mp4", "c.mp4"]
    assert summary["mode"] == "audio" and (out / "side_by_side" / "grid.mp4").is_file()
    assert (summary["settings"]["top_k"], summary["settings"]["top_p"]) == (2048, 0.92)  # the release's
    # greedy: each video is the package's sample conditioned on the STFT codes of its clip's audio
    from tats.data.audio import AudioVideoFolderDataset
    from tats.gpt.load import load_transformer
    from tats.io.video import to_uint8
    from tats.sampling import sample_short

    model = load_transformer(ckpt)
    data = AudioVideoFolderDataset(tmp_path / "drums", train=False, sequence_length=N_FRAMES, resolution=16)
    stft = torch.stack([data[i]["stft"] for i in range(2)])  # (2, 1, 8, 64, 16)
    with torch.no_grad():
        cond = model.cond_vqgan.encode(stft).flatten(1)  # (2, 4) audio tokens
        expected = to_uint8(model.decode(sample_short(model, 2, cond, greedy=True)))
    assert np.abs(np.load(out / "samples.npy").astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(SystemExit, match="--n_sample 5: .* has only 2 test videos"):
        audio.main(["--gpt_ckpt", str(ckpt), "--n_sample", "5", "--data_path", str(tmp_path / "drums"),
                    "--save", str(tmp_path), "--device", "cpu"])
    # the release's command has no --data_path: the default folder data/drums, named when missing
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"--data_path data/drums \(the default\): not a folder of videos"):
        audio.main(["--gpt_ckpt", str(ckpt), "--dataset", "drum", "--n_sample", "10"])


def test_fvd_real_features_are_cached_by_weights(ckpts, tmp_path, tiny_fvd, monkeypatch):
    """--compute_fvd pays for the real clips' I3D features once per (data, protocol, weights)."""
    import tats.metrics.fvd

    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    real_iter = tats.metrics.fvd.iter_video_batches
    reads = []

    def counting_iter(*a, **k):
        reads.append(a[0])
        return real_iter(*a, **k)

    monkeypatch.setattr(tats.metrics.fvd, "iter_video_batches", counting_iter)
    argv = ["--gpt_ckpt", str(ckpts["label"]), "--n_sample", "3", "--batch_size", "3", "--greedy",
            "--compute_fvd", "--data_path", "demo", "--resolution", "16"]
    first, _ = run([*argv, "--save", str(tmp_path / "a")])
    second, _ = run([*argv, "--save", str(tmp_path / "b")])
    assert reads == ["demo", "demo"]  # a random I3D has no weights checksum: never cached
    assert not (tmp_path / "cache" / "fvd").exists()

    import tats.metrics.i3d

    random_i3d = tats.metrics.i3d.load_i3d

    def checksummed(*a, **k):
        model = random_i3d(*a, **k)
        model.weights_sha256 = "0" * 64
        return model

    monkeypatch.setattr(tats.metrics.i3d, "load_i3d", checksummed)
    third, _ = run([*argv, "--save", str(tmp_path / "c")])
    fourth, _ = run([*argv, "--save", str(tmp_path / "d")])
    assert reads == ["demo"] * 3  # the fourth run read the cache, not the data
    assert len(list((tmp_path / "cache" / "fvd").glob("*.npz"))) == 1
    assert third["fvd"]["fvd"] == fourth["fvd"]["fvd"] == first["fvd"]["fvd"]


# ------------------------------------------------------------------------------ the release's defaults
@pytest.fixture(scope="module")
def one_token_models(tmp_path_factory) -> dict[str, Path]:
    """A VQGAN whose 4-frame 2x2 clips are 2 latent frames of one code, and a label transformer on it:
    the smallest model the release's command lines run (two tokens per short video, one decoder block)."""
    from tats.vqgan.config import VQGANConfig

    vq = VQGANConfig(embedding_dim=4, n_codes=16, n_hiddens=2, downsample=(2, 2, 2), norm_type="batch",
                     sequence_length=4, resolution=2)
    d = tmp_path_factory.mktemp("one_token")
    return {"vqgan": save_vqgan(d / "vqgan.ckpt", config=vq), "gpt": save_transformer(d / "gpt.ckpt", vq=vq)}


def test_release_command_lines_default_to_2048_samples_top_k_2048_top_p_092(one_token_models, tmp_path,
                                                                              monkeypatch):
    """The release README's short and long commands without --n_sample / --top_k / --top_p sample
    2048 videos with top-k 2048 and top-p 0.92, its scripts' defaults. (--compute_fvd and --save_videos
    are left out of the short command, whose FVD defaults are tested with fewer clips elsewhere, and the
    long command's --batch_size 5 is raised to 64: 410 batches of 16 sequential steps take seconds.)"""
    import tats.sampling

    used = []  # the filter settings every sampling call received (in its SamplingOptions)
    for name in ("sample_short", "sample_long"):
        real = getattr(tats.sampling, name)

        def spy(*a, _f=real, **k):
            o = next(x for x in (*a, *k.values()) if isinstance(x, tats.sampling.SamplingOptions))
            used.append((o.top_k, o.top_p, o.release_compat))
            return _f(*a, **k)

        monkeypatch.setattr(tats.sampling, name, spy)
    gpt, vq = str(one_token_models["gpt"]), str(one_token_models["vqgan"])
    short, out = run(["--gpt_ckpt", gpt, "--vqgan_ckpt", vq, "--class_cond", "--save", str(tmp_path / "s"),
                      "--data_path", "demo", "--batch_size", "16", "--resolution", "128",
                      "--dataset", "ucf101"])
    long, long_out = run(["--gpt_ckpt", gpt, "--vqgan_ckpt", vq, "--dataset", "ucf101", "--class_cond",
                          "--sample_length", "16", "--temporal_sample_pos", "1", "--batch_size", "64",
                          "--save", str(tmp_path / "l")], long=True)
    for summary, folder, frames in ((short, out, 4), (long, long_out, 16 * 2)):
        assert summary["n_sample"] == 2048 and np.load(folder / "samples.npy", mmap_mode="r").shape == (
            2048, frames, 2, 2, 3)
        settings = json.loads((folder / "summary.json").read_text())["settings"]
        assert (settings["n_sample"], settings["top_k"], settings["top_p"]) == (2048, 2048, 0.92)
        assert "topk2048_topp0.92" in folder.name
    assert len(used) == 2048 // 16 + 2048 // 64 and set(used) == {(2048, 0.92, False)}
