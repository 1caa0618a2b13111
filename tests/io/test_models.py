"""The published checkpoints by name (:mod:`tats.io.registry`, :mod:`tats.io.hosts`).

Google Drive (its confirmation page: today's form, the older cookie and link tokens, a quota page)
and Dropbox (``dl=1`` redirect) are imitated on 127.0.0.1 (``tests/file_hosts.py``) serving tiny
checkpoints written here; ``$TATS_GDRIVE_URL`` / ``$TATS_DROPBOX_URL`` point at that server. Nothing
reaches the network.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import tats
from tats.io import registry as R
from tats.io.checkpoint import CheckpointError
from tats.io.download import DownloadError
from tests.file_hosts import FakeDrive, FakeDropbox, html
from tests.local_http import LocalServer
from tests.tiny_models import save_transformer, save_vqgan

ROOT = Path(__file__).resolve().parents[2]
RELEASE_README = ROOT / "tests" / "fixtures" / "release_readme.json"


def share_id(url: str) -> str | None:
    """The Drive id in a share link, read independently of the code under test."""
    m = re.search(r"drive\.google\.com/(?:file/d/|uc\?.*id=)([\w-]+)", url)
    return m.group(1) if m else None


def i3d_file(path: Path) -> Path:
    """A release-layout I3D state dict (every key and shape of InceptionI3d), each tensor one value
    expanded to its shape (stride 0), so the file is small."""
    from tats.metrics.i3d import InceptionI3d

    sd = {}
    for i, (k, v) in enumerate(InceptionI3d().state_dict().items()):
        sd[k] = torch.tensor(7) if v.dtype == torch.int64 else torch.full((), 0.5 + i * 1e-3).expand(v.shape)
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("published")
    return {
        "vqgan": save_vqgan(d / "vqgan.ckpt", "release"),  # the release's layout, as published
        "vqgan_b": save_vqgan(d / "vqgan_b.ckpt", "release", seed=1),  # another VQGAN
        "gpt": save_transformer(d / "gpt.ckpt", "label"),
        "ar": save_transformer(d / "ar.ckpt", "ar"),
        "interp": save_transformer(d / "interp.ckpt", "interp"),
        "i3d": i3d_file(d / "i3d.pt"),
    }


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Hosts:
    """Drive (one confirmation ``flow``) and Dropbox on one local server."""

    def __init__(self, server: LocalServer, flow: str) -> None:
        self.server = server
        self.drive = FakeDrive(server, flow)
        self.dropbox = FakeDropbox(server)

    def serve(self, name: str, path: Path, **kw) -> bytes:
        """Serve the file at ``path`` as the published model ``name``; returns its bytes."""
        body, url = path.read_bytes(), R.get_model(name).url
        if share_id(url):
            self.drive.add(share_id(url), body, **kw)
        else:
            self.dropbox.add(url, body, **kw)
        return body

    def file_responses(self) -> list:
        return self.drive.file_responses + self.dropbox.file_responses


@pytest.fixture
def make_hosts(cache, monkeypatch):
    with LocalServer() as server:
        monkeypatch.setenv("TATS_GDRIVE_URL", server.url(""))
        monkeypatch.setenv("TATS_DROPBOX_URL", server.url(""))
        monkeypatch.delenv("TATS_OFFLINE", raising=False)
        yield lambda flow="form": Hosts(server, flow)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_every_checkpoint_of_the_release_readme():
    text = "\n".join(json.loads(RELEASE_README.read_text())["links"])
    drive = set(re.findall(r"https://drive\.google\.com/file/d/([\w-]+)/", text))
    links = re.findall(r"https://www\.dropbox\.com/s/[^)\s]+", text)
    dropbox = {u.split("?")[0] for u in links if ".ckpt" in u}  # not the drums data archive
    assert len(drive) == 15 and len(dropbox) == 2  # 3 UCF-101, 2+2 Sky, 2+3 Taichi, 3 drums; 2 MUGEN
    models = [m for m in R.MODELS if m.kind != "i3d"]
    assert {share_id(m.url) for m in models if share_id(m.url)} == drive
    assert {m.url.split("?")[0] for m in models if not share_id(m.url)} == dropbox
    assert len(models) == len(drive) + len(dropbox)  # one name per file
    every = [n for m in R.MODELS for n in (m.name, *m.aliases)]
    assert len(every) == len(set(every)) and all(re.fullmatch(r"[a-z0-9-]+", n) for n in every)
    assert len({m.filename for m in R.MODELS}) == len(R.MODELS)
    i3d = R.get_model("release")  # the release's FVD uses i3d_pretrained_400.pt
    assert i3d.kind == "i3d" and i3d.filename == "i3d_pretrained_400.pt" and share_id(i3d.url)


def test_readme_model_table_is_the_registry():
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("## Published models", 1)[1]
    text = text.split("\n## ", 1)[0]  # that section only
    rows = re.findall(r"^\| `([\w-]+)`(?: \(`([\w-]+)`\))? \| ([^|]+) \| ([^|]+) \|$", text, re.M)
    assert [(n, (a,) if a else (), d.strip(), r.strip()) for n, a, d, r in rows] == [
        (m.name, m.aliases, m.dataset, m.role.replace("i3d_pretrained_400.pt", "`i3d_pretrained_400.pt`"))
        for m in R.MODELS]


# ------------------------------------------------------------------------ download once, then cached
@pytest.mark.parametrize("flow, name, requests", [
    ("form", "ucf101", 2),  # /uc -> confirmation form -> the user-content host
    ("cookie", "ucf101", 2),  # /uc sets download_warning -> /uc&confirm=TOKEN with the cookie
    ("link", "ucf101", 2),  # /uc page with a confirm= link -> that link
    ("direct", "ucf101", 1),  # small files: /uc answers the file
    ("form", "mugen", 2),  # Dropbox: the dl=1 share link -> 302 -> the file
])
def test_a_name_downloads_once_is_verified_and_cached(make_hosts, cache, files, capsys, flow, name, requests):
    hosts = make_hosts(flow)
    body = hosts.serve(name, files["vqgan"])
    model = tats.load_vqgan(name)
    assert same_weights(model, tats.load_vqgan(files["vqgan"]))
    assert len(hosts.server.requests) == requests and len(hosts.file_responses()) == 1
    dst = cache / "models" / f"{name}.ckpt"
    assert dst.read_bytes() == body
    record = json.loads((cache / "models" / "registry_hashes.json").read_text())[name]
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["size"] == len(body)
    assert not list((cache / "models").glob("*.part"))
    assert f"downloading {name}" in capsys.readouterr().err
    tats.load_vqgan(name)  # the second call reads the cache
    assert len(hosts.server.requests) == requests


def test_load_transformer_and_its_vqgan_by_name(make_hosts, cache, files):
    hosts = make_hosts("form")
    hosts.serve("ucf101-base", files["gpt"])
    hosts.serve("ucf101", files["vqgan_b"])
    gpt = tats.load_transformer("ucf101-base", vqgan_ckpt="ucf101")
    ref = tats.load_transformer(files["gpt"])
    assert same_weights(gpt.transformer, ref.transformer)
    assert same_weights(gpt.vqgan, tats.load_vqgan(files["vqgan_b"]))  # vqgan_ckpt replaced the inner one
    assert not same_weights(gpt.vqgan, ref.vqgan)
    assert sorted(p.name for p in (cache / "models").glob("*.ckpt")) == ["ucf101-base.ckpt", "ucf101.ckpt"]


def test_i3d_release_is_the_release_file(make_hosts, cache, files):
    from tats.metrics.i3d import load_i3d

    hosts = make_hosts("direct")
    hosts.serve("i3d", files["i3d"])
    model = load_i3d("release")
    ref = torch.load(files["i3d"], weights_only=True)
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert model.weights_path == str(cache / "models" / "i3d_pretrained_400.pt")
    assert model.Conv3d_1a_7x7.bn.eps == 1e-5  # the release's eps for its own file


# ------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("name", ["ucf101", "mugen"])  # Drive (confirmation form) and Dropbox
def test_an_interrupted_download_resumes(make_hosts, cache, files, name):
    hosts = make_hosts("form")
    size = files["vqgan"].stat().st_size
    cut = size // 3
    body = hosts.serve(name, files["vqgan"], cut_after=cut)
    dst = cache / "models" / f"{name}.ckpt"
    with pytest.raises(DownloadError, match="broke off"):
        R.fetch_model(name, progress=False)
    assert not dst.exists() and Path(f"{dst}.part").stat().st_size == cut
    assert R.fetch_model(name, progress=False) == dst
    assert dst.read_bytes() == body and not Path(f"{dst}.part").exists()
    assert [rng for _, rng in hosts.file_responses()] == [None, f"bytes={cut}-"]  # continued, not restarted


def test_a_whole_or_overlong_partial_file(make_hosts, cache, files):
    hosts = make_hosts("form")
    body = hosts.serve("ucf101", files["vqgan"])
    part = cache / "models" / "ucf101.ckpt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body)  # killed between the last byte and the rename: the server answers 416
    assert R.fetch_model("ucf101", progress=False).read_bytes() == body
    assert [rng for _, rng in hosts.file_responses()] == [f"bytes={len(body)}-"]
    R.cached_path("ucf101").unlink()
    (cache / "models" / "registry_hashes.json").unlink()  # size unknown again
    part.write_bytes(body + b"tail")  # not a prefix of the file: 416, then a fresh download
    assert R.fetch_model("ucf101", progress=False).read_bytes() == body
    assert [rng for _, rng in hosts.file_responses()][1:] == [f"bytes={len(body) + 4}-", None]


# ------------------------------------------------------------------------------------------ refusals
def test_html_pages_are_refused_with_a_clear_message(make_hosts, cache, files):
    hosts = make_hosts("quota")  # Drive: a quota page, no form, no token
    hosts.serve("ucf101", files["vqgan"])
    dst = cache / "models" / "ucf101.ckpt"
    with pytest.raises(DownloadError, match=r"Google Drive answered file 15Otpyr7v6Wnyw2HfQr_cuaRsBiSMd7Rh "
                                            r"with a page .*'Google Drive - Quota exceeded'") as err:
        tats.load_vqgan("ucf101")
    assert f"place it at {dst}" in str(err.value)
    make_hosts("denied").serve("ucf101", files["vqgan"])  # Drive: HTTP 403 with a page
    with pytest.raises(DownloadError, match=r"file 15Otpyr7\S+ with HTTP 403: 'Google Drive - Access"):
        R.fetch_model("ucf101", progress=False)
    # Dropbox: an expired link answers a page for dl=1
    hosts.serve("mugen", files["vqgan"], page=html("Dropbox - Link expired"))
    with pytest.raises(DownloadError, match="answered with an HTML page instead of the file"):
        R.fetch_model("mugen", progress=False)
    assert not hosts.file_responses()
    assert not [p for p in (cache / "models").iterdir() if p.suffix in (".ckpt", ".part")]


EXPLODED: list[str] = []


def _explode() -> None:
    EXPLODED.append("code from a download ran")


class _Payload:
    def __reduce__(self):
        return (_explode, ())


def test_downloads_that_are_not_checkpoints_of_the_kind_are_refused(make_hosts, cache, files, tmp_path):
    hosts = make_hosts("form")
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 64)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"encoder.conv_first.conv.weight": torch.zeros(1)}, "hook": _Payload()}, evil)
    hosts.serve("ucf101", noise)
    hosts.serve("sky", evil)
    hosts.serve("taichi", files["gpt"])  # a transformer where a VQGAN is published
    with pytest.raises(DownloadError, match="not a PyTorch checkpoint"):
        R.fetch_model("ucf101", progress=False)
    with pytest.raises(DownloadError, match="refusing to load .*allow-list.*was not executed"):
        R.fetch_model("sky", progress=False)
    assert EXPLODED == []
    with pytest.raises(DownloadError, match="not a VQGAN checkpoint: it holds a transformer"):
        R.fetch_model("taichi", progress=False)
    assert len(hosts.file_responses()) == 3
    assert not [p for p in (cache / "models").iterdir() if p.suffix in (".ckpt", ".part")]
    assert not (cache / "models" / "registry_hashes.json").exists()


# --------------------------------------------------------------------------------- corrupted caches
@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_corrupted_cached_file_is_fetched_again(make_hosts, cache, files, capsys, monkeypatch, damage):
    hosts = make_hosts("form")
    body = hosts.serve("ucf101", files["vqgan"])
    dst = R.fetch_model("ucf101", progress=False)
    bad = bytearray(body)
    if damage == "flipped":
        bad[len(bad) // 2] ^= 0xFF  # same size, one byte changed
    else:
        bad = bad[: len(bad) // 2]
    dst.write_bytes(bytes(bad))
    assert tats.load_vqgan("ucf101") is not None
    assert dst.read_bytes() == body and len(hosts.file_responses()) == 2
    assert "is not ucf101's file" in capsys.readouterr().err
    # offline, a corrupted copy is an error (it is not used), naming the way out
    dst.write_bytes(bytes(bad))
    monkeypatch.setenv("TATS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"not ucf101's file .* \$TATS_OFFLINE is set"):
        R.resolve_checkpoint("ucf101")
    assert len(hosts.file_responses()) == 2


def test_a_replaced_source_file_is_refused_unless_forced(make_hosts, cache, files):
    hosts = make_hosts("form")
    hosts.serve("ucf101", files["vqgan"])
    dst = R.fetch_model("ucf101", progress=False)
    dst.write_bytes(b"damaged")
    new = hosts.serve("ucf101", files["vqgan_b"])  # the publisher replaced the file since
    with pytest.raises(DownloadError, match=r"differs from the one verified before .*--force ucf101"):
        R.fetch_model("ucf101", progress=False)
    assert not dst.exists()
    R.fetch_model("ucf101", force=True, progress=False)
    assert dst.read_bytes() == new
    assert R.read_records()["ucf101"]["sha256"] == hashlib.sha256(new).hexdigest()


# ------------------------------------------------------------------------------- paths, names, offline
def test_paths_work_as_before_and_unknown_names_list_the_names(cache, files, tmp_path, monkeypatch):
    path = str(files["vqgan"])
    assert R.resolve_checkpoint(path) == path and R.resolve_checkpoint(files["vqgan"]) is files["vqgan"]
    missing = str(tmp_path / "runs" / "last.ckpt")
    assert R.resolve_checkpoint(missing, "vqgan") == missing
    with pytest.raises(CheckpointError, match="checkpoint not found"):  # the loader's own message
        tats.load_vqgan(missing)
    with pytest.raises(R.UnknownModelError) as err:
        tats.load_vqgan("ucf-101")
    listed = str(err.value).split("names: ")[1]
    vqgans = ("ucf101", "sky", "taichi", "taichi-hier", "mugen", "drums", "drums-stft")
    assert all(n in listed for n in vqgans)
    assert "ucf101-base" not in listed  # transformers are not offered for a VQGAN
    # a name of another kind: refused before any download (offline, so a download attempt would
    # have been a FileNotFoundError)
    with pytest.raises(CheckpointError, match="'ucf101-base' is the UCF-101 TATS-base .* not a VQGAN"):
        tats.load_vqgan("ucf101-base")
    with pytest.raises(CheckpointError, match="not a transformer"):
        tats.load_transformer("ucf101")
    monkeypatch.chdir(tmp_path)  # a file in the working folder called like a name is that file
    shutil.copy(files["vqgan_b"], tmp_path / "ucf101")
    assert same_weights(tats.load_vqgan("ucf101"), tats.load_vqgan(files["vqgan_b"]))
    assert not (cache / "models").exists()


def test_offline_names_the_manual_route_and_a_placed_file_is_used(cache, files):
    dst = cache / "models" / "ucf101.ckpt"
    with pytest.raises(FileNotFoundError) as err:
        tats.load_vqgan("ucf101")
    msg = str(err.value)
    assert "$TATS_OFFLINE" in msg and f"place it at {dst}" in msg
    assert "https://drive.google.com/file/d/15Otpyr7v6Wnyw2HfQr_cuaRsBiSMd7Rh" in msg
    dst.parent.mkdir(parents=True)
    shutil.copy(files["vqgan"], dst)  # placed by hand
    assert same_weights(tats.load_vqgan("ucf101"), tats.load_vqgan(files["vqgan"]))
    assert R.read_records()["ucf101"]["sha256"] == hashlib.sha256(files["vqgan"].read_bytes()).hexdigest()
    shutil.copy(files["gpt"], cache / "models" / "sky.ckpt")  # the wrong file placed by hand
    with pytest.raises(FileNotFoundError, match="not sky's file .*not a VQGAN checkpoint"):
        tats.load_vqgan("sky")


# ------------------------------------------------------------------------------------ command lines
def test_download_models_script(make_hosts, cache, files, capsys, load_script):
    script = load_script(ROOT / "scripts" / "download_models.py")
    hosts = make_hosts("cookie")
    by_kind = {"vqgan": files["vqgan"], "transformer": files["gpt"], "i3d": files["i3d"]}
    for m in R.MODELS:
        hosts.serve(m.name, by_kind[m.kind])
    assert script.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^  {re.escape(m.name)} .* not cached  ", out, re.M) for m in R.MODELS)
    assert script.main(["ucf101", "--no_progress"]) == 0
    assert script.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  ucf101 +UCF-101 +cached \d", out, re.M)
    assert re.search(r"^  ucf101-base +UCF-101 +not cached ", out, re.M)
    assert script.main(["--all", "--no_progress"]) == 0
    assert sorted(p.name for p in (cache / "models").iterdir() if p.suffix in (".ckpt", ".pt")) == sorted(
        m.filename for m in R.MODELS)
    assert len(hosts.file_responses()) == len(R.MODELS)  # ucf101 was not downloaded twice
    (cache / "models" / "sky.ckpt").unlink()
    del hosts.drive.files[share_id(R.get_model("sky").url)]  # the link is gone
    capsys.readouterr()
    assert script.main(["sky", "taichi", "--no_progress"]) == 1
    assert "failed: sky" in capsys.readouterr().err
    assert script.main(["nope"]) == 1
    assert "names: ucf101, ucf101-base" in capsys.readouterr().err


@pytest.fixture
def placed(cache, files) -> Path:
    """Published names placed in the cache by hand (the tests run offline)."""
    d = cache / "models"
    d.mkdir(parents=True)
    for name, key in {"ucf101": "vqgan", "ucf101-base": "gpt", "sky": "vqgan", "sky-ar": "ar",
                      "sky-interp": "interp", "mugen": "vqgan", "mugen-base": "gpt", "drums": "vqgan",
                      "drums-stft": "vqgan", "drums-base": "gpt", "i3d": "i3d"}.items():
        shutil.copy(files[key], d / R.get_model(name).filename)
    return d


@pytest.mark.usefixtures("one_thread")
def test_sampling_command_lines_take_names(placed, tmp_path, load_script):
    from tats.cli.sample import main

    summary = main(["--gpt_ckpt", "ucf101-base", "--vqgan_ckpt", "ucf101", "--n_sample", "1", "--greedy",
                    "--save", str(tmp_path / "s"), "--device", "cpu", "--no_progress"])
    assert summary["gpt_ckpt"] == str(placed / "ucf101-base.ckpt")
    assert [p.name.split("_")[0] for p in (tmp_path / "s").iterdir()] == ["ucf101-base"]
    hier = load_script(ROOT / "scripts" / "sample_hierarchical.py")
    summary = hier.main(["--ckpt1", "sky-ar", "--CKPT2", "sky-interp", "--vqgan", "sky",
                         "--sample_length", "3", "--n_sample", "1", "--greedy", "--save", str(tmp_path),
                         "--save_name", "h", "--device", "cpu", "--no_progress"])
    assert summary["ckpt1"] == str(placed / "sky-ar.ckpt")
    assert summary["ckpt2"] == str(placed / "sky-interp.ckpt")
    assert summary["latent_frames"] == 5


class _Stop(Exception):
    pass


def test_every_checkpoint_flag_takes_names(placed, tmp_path, monkeypatch, load_script):
    """Each script hands its loaders the cached files (stopped at the first step after resolving)."""
    seen: dict[str, str] = {}

    def capture(*flags):
        def stub(args, *_):
            seen.update({f: getattr(args, f) for f in flags})
            raise _Stop
        return stub

    cases = [
        ("scripts/sample_text_cond.py", ["--gpt_ckpt", "mugen-base", "--vqgan_ckpt", "mugen", "--text", "a"],
         "check_files", {"gpt_ckpt": "mugen-base", "vqgan_ckpt": "mugen"}),
        ("scripts/sample_audio_cond.py", ["--gpt_ckpt", "drums-base", "--vqgan_ckpt", "drums",
                                          "--stft_vqgan_ckpt", "drums-stft", "--data_path", str(tmp_path)],
         "check_files", {"gpt_ckpt": "drums-base", "vqgan_ckpt": "drums", "stft_vqgan_ckpt": "drums-stft"}),
        ("scripts/predict_frames.py", ["--gpt_ckpt", "ucf101-base", "--vqgan_ckpt", "ucf101"],
         "check_files", {"gpt_ckpt": "ucf101-base", "vqgan_ckpt": "ucf101"}),
        ("train_transformer.py",
         ["--vqvae", "ucf101", "--stft_vqvae", "drums-stft", "--cond_stage_key", "stft"],
         "check_file_flag", {"vqvae": "ucf101", "stft_vqvae": "drums-stft"}),
    ]
    import tats.train.transformer

    for script, argv, target, expect in cases:
        module = load_script(ROOT / script)
        seen.clear()
        if target == "check_file_flag":  # called once per flag: record, stop at the next step
            steps = tats.train.transformer  # the root script parses; the package checks and trains
            monkeypatch.setattr(steps, target, lambda flag, value, **_: seen.update({flag: value}))
            monkeypatch.setattr(steps, "check_data_flags", capture())
        else:
            monkeypatch.setattr(module, target, capture(*expect))
        with pytest.raises(_Stop):
            module.main(argv)
        assert seen == {f: str(placed / R.get_model(n).filename) for f, n in expect.items()}, script
    import tats.cli.sample as G

    seen.clear()
    monkeypatch.setattr(G, "check_paths", capture("i3d_path", "gpt_ckpt"))
    with pytest.raises(_Stop):
        G.main(["--gpt_ckpt", "ucf101-base", "--compute_fvd", "--i3d", "release"])
    assert seen == {"i3d_path": str(placed / "i3d_pretrained_400.pt"),
                    "gpt_ckpt": str(placed / "ucf101-base.ckpt")}

    def record(key):
        def stub(path, **_):
            seen[key] = path
            raise _Stop
        return stub

    codes = load_script(ROOT / "scripts" / "extract_codes.py")
    monkeypatch.setattr(codes, "load_vqgan", record("vqvae"))
    with pytest.raises(_Stop):
        codes.main(["--vqvae", "ucf101", "--output", str(tmp_path / "codes.h5")])
    assert seen["vqvae"] == str(placed / "ucf101.ckpt")
    fvd = load_script(ROOT / "scripts" / "compute_fvd.py")  # "release" is resolved inside load_i3d
    monkeypatch.setattr(fvd, "load_i3d", record("i3d"))
    with pytest.raises(_Stop):
        fvd.main(["--real", "a", "--fake", "b", "--i3d", "release"])
    assert seen["i3d"] == "release"
    # train_vqgan.py --init_ckpt NAME: VQGANModule.load_weights resolves it
    from tats.vqgan.lightning import VQGANModule

    ref = tats.load_vqgan(placed / "ucf101.ckpt")
    module = VQGANModule(ref.config)  # perceptual_weight 0: no LPIPS weights needed
    module.load_weights("ucf101")
    assert same_weights(module.vqgan, ref)
