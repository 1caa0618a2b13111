"""Training-step throughput of the transformer: on-the-fly VQGAN encoding vs precomputed codes.

Same model, same batch size, same optimizer; each timed step includes fetching the batch from its
DataLoader (HDF5 video decode + preprocessing, or the codes file), building tokens (the VQGAN
forward when encoding on the fly), forward, backward and the AdamW step.

    python bench_vtokens.py VQGAN.ckpt DEMO.h5 CODES.h5 [steps]
"""

import argparse
import statistics
import sys
import time

import torch

from tats.data import VideoDataModule
from tats.data.codes import CodesDataModule
from tats.gpt.config import GPTConfig
from tats.gpt.lightning import TransformerModule
from tats.vqgan.load import load_vqgan


def make_stepper(module, loader):
    """A closure running one training step (fetch batch, tokens, forward, backward, AdamW)."""
    opt = module.configure_optimizers()
    state = {"it": iter(loader)}

    def step():
        try:
            batch = next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            batch = next(state["it"])
        loss, _ = module.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step, n):
    """(wall seconds, process CPU seconds) per step over n steps."""
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n


def main(argv):
    vq_path, demo, codes = argv[:3]
    steps = int(argv[3]) if len(argv) > 3 else 10
    rounds = int(argv[4]) if len(argv) > 4 else 5
    vqgan = load_vqgan(vq_path)
    cdm = CodesDataModule(codes, batch_size=32, num_workers=0)
    cdm.setup()
    a = cdm.attrs
    args = argparse.Namespace(data_path=demo, sequence_length=a["sequence_length"],
                              resolution=a["resolution"],
                              sample_every_n_frames=1, batch_size=32, num_workers=0)
    vdm = VideoDataModule(args)
    vdm.setup()
    cfg = GPTConfig(vocab_size=vqgan.config.n_codes + cdm.n_classes, block_size=64, n_layer=2, n_head=4,
                    n_embd=64, cond_type="label", n_cond_vocab=cdm.n_classes, n_cond_tokens=1,
                    n_codes=vqgan.config.n_codes, latent_shape=cdm.latent_shape)
    torch.manual_seed(0)
    module = TransformerModule.from_vqgan(cfg, vqgan, learning_rate=1e-3).train()
    tokens = 32 * (1 + cfg.n_latent_tokens)
    steppers = {"on-the-fly encoding": make_stepper(module, vdm.train_dataloader()),
                "precomputed codes": make_stepper(module, cdm.train_dataloader())}
    for step in steppers.values():  # warm-up
        timed(step, 3)
    # Interleaved rounds (A, B, A, B, ...) so that load changes on a shared machine hit both alike.
    results = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            results[name].append(timed(step, steps))
    print(f"threads={torch.get_num_threads()} batch=32 tokens/step={tokens} rounds={rounds} x {steps} steps")
    med = {}
    for name, r in results.items():
        wall = statistics.median(x[0] for x in r)
        cpu = statistics.median(x[1] for x in r)
        med[name] = (wall, cpu)
        print(f"{name:20s}: wall {wall * 1e3:7.1f} ms/step ({tokens / wall:7.0f} tokens/s), "
              f"CPU {cpu * 1e3:7.1f} ms/step")
    a, b = med["on-the-fly encoding"], med["precomputed codes"]
    print(f"speedup: x{a[0] / b[0]:.2f} wall, x{a[1] / b[1]:.2f} CPU time")

if __name__ == "__main__":
    main(sys.argv[1:])
