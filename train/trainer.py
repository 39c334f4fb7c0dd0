"""The training loop: plain PyTorch, readable top to bottom. `train(config)` is the whole stage."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from mixsd.atomic import write_json
from mixsd.checkpoints import RUN_INFO_FILE
from mixsd.config import to_dict
from mixsd.devices import peak_flops, training_flops_per_token
from mixsd.errors import UserError
from mixsd.lock import output_lock
from mixsd.models import load_tokenizer
from mixsd.precision import training_dtype
from mixsd.run_format import RunManifest
from train import checkpoint, data
from train.config import TrainConfig
from train.distributed import Distributed
from train.logs import StepLog, parse_sinks, progress_fields
from train.memory import fix_mmap_threshold
from train.opsd import opsd_loss, rollouts


class TrainingError(UserError, RuntimeError):
    pass


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int
    padding: float


def train(config: TrainConfig) -> Path:
    """Train into `config.out`, which only the main process writes and holds locked while it runs."""
    dist = Distributed.from_env()
    lock = output_lock(config.out, f"training run {config.out}") if dist.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        return _train(config, dist)
    finally:
        if lock is not None:
            lock.release()


def _train(config: TrainConfig, dist: Distributed) -> Path:
    device = dist.device(config.device)
    if config.mmap_threshold_kib < 0:
        config = replace(config, mmap_threshold_kib=0 if config.method == "opsd" else 1024)
    if device.type == "cpu":
        fix_mmap_threshold(config.mmap_threshold_kib)
    if config.dtype == "auto":  # resolved once: the saved config, and a resume's comparison, name the precision
        config = replace(config, dtype=training_dtype("auto", device))
        if dist.is_main:
            print(f"precision: --dtype auto is {config.dtype} on {device.type}", flush=True)
    out = Path(config.out)
    examples, manifests = data.load_examples(config.shards)
    examples, counts = data.select(examples, config.include_unverified, config.method)
    if dist.is_main:
        print(counts.line(), flush=True)
    per_epoch = data.steps_per_epoch(len(examples), config.batch_size)
    if per_epoch == 0:
        raise data.DataError(f"--batch_size {config.batch_size} is larger than the {len(examples)} examples")
    if config.batch_size % dist.world:
        raise TrainingError(f"--batch_size {config.batch_size} must divide evenly over {dist.world} processes")
    total_steps = config.max_steps or config.epochs * per_epoch
    resume_from = _resume_point(out, config)

    model, tokenizer = _load_model(resume_from or config.model, device)
    teacher = None
    if config.method == "opsd":
        from mixsd.attention import use_grouped_decode_attention

        use_grouped_decode_attention(model)  # the student samples its rollouts
        teacher = _load_model(config.model, device)[0].requires_grad_(False)
    ddp_model = dist.wrap(model, fsdp=config.fsdp)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
    step = _restore(resume_from, model, optimizer, scheduler, dist) if resume_from is not None else 0
    if dist.is_main:
        _write_run_info(out, config, manifests, counts, total_steps, dist.world)
    log = StepLog(out, parse_sinks(config.log), keep_through=step, enabled=dist.is_main, run_config=to_dict(config))
    peak = peak_flops(device)  # MFU where the device's peak is known
    # Model FLOPs per token over the world's total peak (the logged tokens are the global batch's).
    mfu_per_token_s = training_flops_per_token(model) / (peak * dist.world) if peak else None

    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if config.dtype == "bfloat16" else nullcontext()
    ctx = StepContext(ddp_model, teacher, tokenizer, optimizer, config, dist, device, autocast)
    bar = tqdm(total=total_steps, initial=step, unit="step", disable=not (config.progress and dist.is_main))
    try:
        while step < total_steps:
            epoch, index = divmod(step, per_epoch)
            order = data.epoch_order(len(examples), config.seed, epoch)
            batch = [examples[i] for i in order[index * config.batch_size : (index + 1) * config.batch_size]]
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves on after it)
            result = _train_step(ctx, batch[dist.rank :: dist.world], step)
            scheduler.step()
            step += 1
            record = _step_record(step, epoch, lr, result, time.perf_counter() - start, mfu_per_token_s)
            log.write(record)
            bar.update(1)
            bar.set_postfix(progress_fields(record), refresh=False)
            if (config.save_every and step % config.save_every == 0) or step == total_steps:
                _save(ctx, model, scheduler, step)
    finally:  # what was logged stays readable, also when a step fails
        bar.close()
        log.close()
    # DDP's reducer holds the process group: freed after `close`, when a faster process may already have
    # exited, the group's destructor waited forever for it (seen once: a rank hung in ~ProcessGroupGloo).
    del ctx, ddp_model
    dist.close()
    return checkpoint.step_dir(out, step)


@dataclass
class StepContext:
    """What every optimizer step works with (fixed for the whole run)."""

    model: torch.nn.Module  # the student as the step runs it (DDP/FSDP wrapped, or plain)
    teacher: torch.nn.Module | None  # OPSD's frozen base model
    tokenizer: object
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    dist: Distributed
    device: torch.device
    autocast: object  # a context manager: bf16 autocast or nothing


def nll_loss(ctx: StepContext, group: list[data.TrainExample], step: int, _drawn=None) -> tuple[torch.Tensor, int, int]:
    """SFT and MixSD: the summed NLL of the target tokens (and EOS where the target ended); (loss, labelled
    tokens, tokens processed)."""
    collated = data.collate(group, ctx.tokenizer.eos_token_id, data.pad_id(ctx.tokenizer))
    return (
        _summed_nll(ctx.model, collated, ctx.device, ctx.autocast),
        sum(e.label_count() for e in group),
        sum(map(len, group)),
    )


def opsd_step_loss(ctx: StepContext, group: list[data.TrainExample], step: int, drawn=None):
    """OPSD: the summed reverse KL over the group's rollouts; (loss, completion tokens, completion tokens)."""
    summed, tokens = opsd_loss(ctx.model, ctx.teacher, group, ctx.tokenizer, ctx.config, step, ctx.autocast, drawn)
    return summed, tokens, tokens


def opsd_step_rollouts(ctx: StepContext, batch: list[data.TrainExample], step: int) -> dict | None:
    """With --rollout_batch_size: every rollout of this process's batch, before its micro-batches."""
    size = ctx.config.rollout_batch_size
    return rollouts(ctx.model, batch, ctx.tokenizer, ctx.config, step, size) if size else None


LOSSES = {"sft": nll_loss, "mixsd": nll_loss, "opsd": opsd_step_loss}
# Work a step does over its whole batch before the micro-batches' losses (their shared input).
BEFORE_STEP = {"opsd": opsd_step_rollouts}


def _restore(directory: Path, model, optimizer, scheduler, dist: Distributed) -> int:
    """Optimizer, scheduler and RNG as the checkpoint left them; the step it was written at."""
    state = checkpoint.load_state(directory)
    dist.load_optimizer(model, optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoint.restore_rng(state)
    return state["position"]["step"]


def _step_record(step: int, epoch: int, lr: float, result: StepResult, seconds: float, mfu_per_token_s) -> dict:
    """One line of metrics.jsonl (and of every other sink)."""
    record = {
        "step": step,
        "epoch": epoch,
        "loss": result.loss,
        "lr": lr,
        "grad_norm": result.grad_norm,
        "tokens": result.tokens,
        "seconds": round(seconds, 4),
        "tokens_per_s": result.tokens / seconds,
        "padding_fraction": result.padding,
    }
    if mfu_per_token_s:
        record["mfu"] = mfu_per_token_s * result.tokens / seconds
    return record


def _save(ctx: StepContext, model, scheduler, step: int) -> None:
    """A checkpoint at `step`: every process gathers (FSDP shards its state), the main process writes."""
    config = ctx.config
    model_state, optimizer_state = ctx.dist.gather_state(model, ctx.optimizer)
    if ctx.dist.is_main:
        checkpoint.save(
            Path(config.out),
            step,
            model,
            ctx.tokenizer,
            optimizer_state,
            scheduler,
            {"step": step},
            to_dict(config),
            config.keep_last,
            model_state=model_state,
            keep_state_last=config.keep_state_last,
        )
    ctx.dist.barrier()


def _train_step(ctx: StepContext, batch: list[data.TrainExample], step: int) -> StepResult:
    """One optimizer step over this process's share of the batch. Each micro-batch's forward and backward run
    together (inside no_sync but the last, whose backward all-reduces everything) and its graph dies before
    the next. The summed loss is back-propagated and the gradients are divided by the number of loss tokens of
    the whole global batch at the end: the same gradient as normalizing first, and it works for OPSD, whose
    token count is known only after its rollouts."""
    ctx.model.train()
    groups = data.micro_batches(batch, ctx.config.micro_batch_size)
    loss_fn, before = LOSSES[ctx.config.method], BEFORE_STEP.get(ctx.config.method)
    shared = before(ctx, batch, step) if before else None
    total, loss_tokens, processed = torch.zeros((), device=ctx.device), 0, 0  # the loss stays on the device
    for i, group in enumerate(groups):
        with ctx.dist.no_sync(ctx.model, last=i == len(groups) - 1):
            summed, labelled, seen = loss_fn(ctx, group, step, shared)
            (summed * ctx.dist.world).backward()  # DDP averages over processes: this makes it a global sum
        total, loss_tokens, processed = total + summed.detach(), loss_tokens + labelled, processed + seen
        del summed
    global_tokens = ctx.dist.sum(loss_tokens)
    _scale_gradients(ctx.model, 1.0 / max(global_tokens, 1))
    loss = _checked(ctx.dist.sum(total.item()) / max(global_tokens, 1), step)  # the step's one wait on the device
    grad_norm = _clip_and_step(ctx.model, ctx.optimizer, ctx.config)
    return StepResult(loss, grad_norm, ctx.dist.sum(processed), data.padding_fraction(groups))


def _summed_nll(model, collated: dict, device: torch.device, autocast) -> torch.Tensor:
    """Summed NLL of the target tokens. Logits are computed only from the first position that predicts a
    target (`logits_to_keep`): prompts are most of each sequence, and the vocabulary projection and its float32
    copy are the largest tensors of a small model's step. Labels are shifted instead of the logits (no copy),
    and the logits die with this frame, before the next micro-batch's forward pass. The cut is found on the host
    and the batch is copied without waiting (pinned memory on CUDA), so the host never waits for the device.
    No KV cache: a model's default `use_cache=True` copies every layer's keys and values into one (two
    concatenations and their casts per layer), work a training forward never reads."""
    labels = torch.nn.functional.pad(collated["labels"][:, 1:], (0, 1), value=data.IGNORE)
    first = int((labels != data.IGNORE).float().argmax(dim=1).min())
    keep = labels.shape[1] - first
    ids, mask, labels = (_to_device(t, device) for t in (collated["input_ids"], collated["attention_mask"], labels))
    with autocast:
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels[:, first:].flatten(), ignore_index=data.IGNORE, reduction="sum"
    )


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to CUDA through pinned memory, without waiting for the copy."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _scale_gradients(model, factor: float) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads:
        torch._foreach_mul_(grads, factor)  # a few kernels for all parameters, not one per parameter


def _checked(loss: float, step: int) -> float:
    """Stop before a non-finite loss reaches the weights; checkpoints already written stay as they are."""
    if not math.isfinite(loss):
        raise TrainingError(f"non-finite loss ({loss}) at step {step + 1}; the last checkpoint is intact")
    return loss


def _clip_and_step(model, optimizer, config) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP returns a DTensor


def _load_model(source, device):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device)  # float32 master weights
    return model, load_tokenizer(str(source))


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and biases (vectors)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per step on CPU and CUDA, without the group-sized temporaries of the foreach path.
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), fused=True)


def _schedule(config: TrainConfig, total_steps: int):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "cosine":
            progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


# Settings that change what is printed, logged or kept, not the weights: a run may resume under other values.
_NOT_RESULTS = ("resume", "progress", "log", "keep_last", "keep_state_last", "mmap_threshold_kib")
# A setting added after a checkpoint was written is compared against its default.
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def _resume_point(out: Path, config: TrainConfig) -> Path | None:
    existing = checkpoint.resumable(out)
    if not existing:
        if checkpoint.checkpoints(out):
            raise TrainingError(f"{out}: its checkpoints hold no resume state; choose another --out")
        return None
    if not config.resume:
        raise TrainingError(f"{out} already holds checkpoints; pass --resume to continue or choose another --out")
    saved = checkpoint.saved_config(existing[-1])
    differs = sorted(
        k for k, v in to_dict(config).items() if k not in _NOT_RESULTS and saved.get(k, _DEFAULTS.get(k)) != v
    )
    if differs:
        raise TrainingError(
            f"{existing[-1]} was trained with other settings ({', '.join(differs)}); refusing to resume into it"
        )
    return existing[-1]


def _write_run_info(
    out: Path, config: TrainConfig, manifests: list[RunManifest], counts: data.RowCounts, steps: int, world: int
):
    from mixsd.versions import versions

    write_json(
        out / RUN_INFO_FILE,
        {
            "config": to_dict(config),
            "versions": versions(),
            "examples": counts.used,
            "data": asdict(counts),
            "total_steps": steps,
            "world_size": world,
            "shards": [
                {"run": m.config_hash, "lam": m.config.get("lam"), "method": m.config.get("method")} for m in manifests
            ],
        },
    )
