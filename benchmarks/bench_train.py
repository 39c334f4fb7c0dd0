"""Training throughput and peak memory: this project's loop against the transformers Trainer on the same
shards, batch and precision, each in its own process. Prints measured numbers; asserts nothing.

    python benchmarks/bench_train.py --model models/smollm2-135m-instruct --shards RUN_DIR --steps 8
On a CUDA machine it also reports model FLOPs utilization (6 · parameters · tokens / time / peak).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time

import fire
import torch


def _peak_memory_gib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def train_rows(**settings) -> list[dict]:
    """`train/`'s loop with these TrainConfig settings (no warmup, no progress bar) into a temporary directory
    (a checkpoint is 1.6 GB: never left behind); its metrics.jsonl rows."""
    from train.config import TrainConfig
    from train.trainer import train

    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        train(TrainConfig(out=out, warmup_steps=0, progress=False, **settings))
        return [json.loads(line) for line in open(f"{out}/metrics.jsonl")]


def run_ours(model: str, shards: str, steps: int, batch_size: int, micro_batch_size: int, dtype: str) -> dict:
    start = time.perf_counter()
    rows = train_rows(
        model=model,
        shards=[shards],
        max_steps=steps,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        dtype=dtype,
    )
    total = time.perf_counter() - start
    timed = rows[1:]  # the first step pays for allocation and kernel selection
    return {
        "tokens_per_s": sum(r["tokens"] for r in timed) / sum(r["seconds"] for r in timed),
        "peak_gib": _peak_memory_gib(),
        "wall_s": total,
        "padding": sum(r["padding_fraction"] for r in rows) / len(rows),
    }


def run_trainer(model: str, shards: str, steps: int, batch_size: int, micro_batch_size: int, dtype: str) -> dict:
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from train.data import IGNORE, load_examples

    examples, _ = load_examples([shards])  # the same rows, checks and order as the train/ loop reads
    tokenizer = AutoTokenizer.from_pretrained(model)
    eos = tokenizer.eos_token_id
    # Whole batches only, as the train/ loop takes them: with a remainder the Trainer makes a short step of the
    # leftover micro-batches at each epoch's end (90 rows, batch 64, micro 16: steps of 4 and 1 micro-batches).
    examples = examples[: len(examples) // batch_size * batch_size]
    features = [
        {"input_ids": e.prompt_ids + e.label_ids(eos), "labels": [IGNORE] * len(e.prompt_ids) + e.label_ids(eos)}
        for e in examples
    ]
    step_times, step_tokens = [], []

    class Timer(TrainerCallback):
        """A step is the time from one step's end to the next's: the Trainer fetches and collates a step's
        micro-batches before `on_step_begin`, and the train/ loop's step time includes that work."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            step_times.append(now - self.last)
            self.last = now

    class CountingCollator(DataCollatorForSeq2Seq):
        def __call__(self, batch, return_tensors=None):
            step_tokens.append(sum(len(b["input_ids"]) for b in batch))
            return super().__call__(batch, return_tensors)

    out = tempfile.TemporaryDirectory(prefix="bench-trainer-")
    args = TrainingArguments(
        output_dir=out.name,
        per_device_train_batch_size=micro_batch_size,
        gradient_accumulation_steps=batch_size // micro_batch_size,
        max_steps=steps,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        adam_beta2=0.95,
        weight_decay=0.01,
        max_grad_norm=1.0,
        bf16=dtype == "bfloat16",
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="steps",
        save_steps=steps,  # a resumable checkpoint at the end, as the train/ loop writes
        logging_strategy="no",
        dataloader_drop_last=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
        args=args,
        train_dataset=features,
        data_collator=CountingCollator(tokenizer, padding=True),
        callbacks=[Timer()],
    )
    start = time.perf_counter()
    try:
        trainer.train()
        total = time.perf_counter() - start
    finally:
        out.cleanup()  # a checkpoint is 1.6 GB: never left behind, also when training fails
    per_step = batch_size // micro_batch_size
    tokens = [sum(step_tokens[i * per_step : (i + 1) * per_step]) for i in range(len(step_times))]
    return {"tokens_per_s": sum(tokens[1:]) / sum(step_times[1:]), "peak_gib": _peak_memory_gib(), "wall_s": total}


def main(
    model: str = "models/smollm2-135m-instruct",
    shards: str = "",
    steps: int = 8,
    batch_size: int = 16,
    micro_batch_size: int = 4,
    dtype: str = "auto",
    mode: str = "both",
) -> None:
    from mixsd.precision import training_dtype

    dtype = training_dtype(dtype, torch.device("cuda" if torch.cuda.is_available() else "cpu"))  # same on both sides
    if mode in ("ours", "trainer"):
        runner = run_ours if mode == "ours" else run_trainer
        print(json.dumps(runner(model, shards, steps, batch_size, micro_batch_size, dtype)))
        return
    results = {}
    for name in ("ours", "trainer"):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                name,
                "--model",
                model,
                "--shards",
                shards,
                "--steps",
                str(steps),
                "--batch_size",
                str(batch_size),
                "--micro_batch_size",
                str(micro_batch_size),
                "--dtype",
                dtype,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; model {model}; batch {batch_size} (micro {micro_batch_size}); {dtype}; {steps} steps")
    for name, label in (("ours", "train/ loop"), ("trainer", "transformers Trainer")):
        r = results[name]
        print(f"{label:22s}: {r['tokens_per_s']:9.1f} tokens/s, peak memory {r['peak_gib']:.2f} GiB")
    ours, theirs = results["ours"], results["trainer"]
    print(
        f"speed ratio (ours / Trainer): {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x; "
        f"memory ratio: {ours['peak_gib'] / theirs['peak_gib']:.2f}x"
    )
    if torch.cuda.is_available():
        from transformers import AutoConfig, AutoModelForCausalLM

        params = sum(
            p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).parameters()
        )
        from mixsd.devices import peak_flops

        peak = peak_flops(torch.device("cuda"))
        if peak:
            print(f"MFU (ours): {6 * params * ours['tokens_per_s'] / peak:.1%} of {peak / 1e12:.0f} TFLOP/s")


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    fire.Fire(main)
