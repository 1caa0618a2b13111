"""The sampling command lines with a masked model (--decode masked --steps N) and with guidance
(--cfg_scale), and the flags that cannot work with the checkpoint given."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sampling.test_sample_scripts import check_outputs, run
from tests.tiny_models import CLIP_SHAPE, save_transformer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("masked_ckpts")
    return {"masked": save_transformer(d / "masked.ckpt", "label", objective="masked", null_cond=True),
            "gpt_cfg": save_transformer(d / "gpt_cfg.ckpt", "label", null_cond=True),
            "gpt": save_transformer(d / "gpt.ckpt", "label")}


def test_short_and_long_masked(ckpts, tmp_path):
    summary, out = run(["--gpt_ckpt", str(ckpts["masked"]), "--class_cond", "--save", str(tmp_path / "s"),
                        "--n_sample", "3", "--batch_size", "2", "--decode", "masked", "--steps", "3",
                        "--top_k", "8", "--top_p", "0.9"])
    check_outputs(out, 3, CLIP_SHAPE[1])
    assert "masked3" in out.name and summary["settings"]["steps"] == 3
    summary, out = run(["--gpt_ckpt", str(ckpts["masked"]), "--save", str(tmp_path / "l"), "--n_sample", "2",
                        "--sample_length", "6", "--temporal_sample_pos", "2", "--cfg_scale", "2"], long=True)
    check_outputs(out, 2, 6 * 2)  # 6 latent frames of 2 pixel frames
    assert "cfg2" in out.name and "masked12" in out.name  # --decode auto: the checkpoint's decoder


def test_guided_gpt(ckpts, tmp_path):
    summary, out = run(["--gpt_ckpt", str(ckpts["gpt_cfg"]), "--save", str(tmp_path / "g"), "--n_sample", "2",
                        "--cfg_scale", "4", "--top_k", "8"])
    check_outputs(out, 2, CLIP_SHAPE[1])
    assert summary["settings"]["cfg_scale"] == 4.0 and "masked" not in out.name


@pytest.mark.parametrize("ckpt, extra, match", [
    ("gpt", ["--decode", "masked"], "is an autoregressive model"),
    ("masked", ["--decode", "autoregressive"], "is a masked model"),
    ("gpt", ["--cfg_scale", "2"], "without condition dropout"),
    ("gpt_cfg", ["--cfg_scale", "2", "--compile"], "eager token loop"),
    ("masked", ["--compile"], "masked decoding runs eagerly"),
    ("masked", ["--steps", "0"], "--steps"),
])
def test_flags_that_do_not_fit_the_checkpoint(ckpts, tmp_path, ckpt, extra, match):
    with pytest.raises(SystemExit, match=match):
        run(["--gpt_ckpt", str(ckpts[ckpt]), "--save", str(tmp_path / "x"), "--n_sample", "1", *extra])


def test_masked_spatial_window_is_refused(ckpts, tmp_path):
    with pytest.raises(SystemExit, match="sample_resolution"):
        run(["--gpt_ckpt", str(ckpts["masked"]), "--save", str(tmp_path / "x"), "--n_sample", "1",
             "--sample_resolution", "3"], long=True)
