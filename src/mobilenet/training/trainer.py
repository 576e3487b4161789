"""Train or fine-tune a MobileNet on an image folder: one class, one loop, resumable at every epoch.

Reproducibility: every epoch re-seeds the RNGs from ``(seed, epoch)`` and its data order from the sampler's
epoch, so an epoch's randomness does not depend on what ran before. That is what lets a run killed mid-epoch
resume from the last epoch checkpoint and end bit-for-bit where an uninterrupted run ends (CPU,
deterministic mode).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mobilenet.data import DataBundle, ImageDecodeError, build_dataloaders, load_rgb
from mobilenet.errors import MobilenetError
from mobilenet.evaluation.metrics import EvalResult, autocast_context, evaluate_model
from mobilenet.fileio import atomic_write_text, json_safe
from mobilenet.models.builder import MobileNet, ModelConfig
from mobilenet.models.registry import config_from_name
from mobilenet.profiling.cost import cost_of_model
from mobilenet.training import checkpoint
from mobilenet.training.config import TrainConfig
from mobilenet.training.distributed import World, all_reduce_sum, barrier, init_world, shutdown
from mobilenet.training.ema import ModelEma
from mobilenet.training.optim import build_optimizer, lr_multiplier, parameter_groups
from mobilenet.training.sync_batchnorm import convert_sync_batchnorm
from mobilenet.weights.format import load as load_weights
from mobilenet.weights.format import read_metadata, save_weights

HEAD_PARTS = ("pre_logits", "classifier")
# Saved in the optimizer's state, which a resume restores over the values given now: a change would be ignored
# silently (weight decay, momentum) or fail to load (the optimizer, a decay that merges parameter groups).
RESUME_FIXED_SETTINGS = (
    "optimizer", "weight_decay", "depthwise_weight_decay", "momentum", "rmsprop_decay", "rmsprop_eps",
)


@dataclass
class TrainResult:
    run_dir: Path
    weights: Path
    class_names: list[str]
    best_top1: float
    final_top1: float
    final_top5: float
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: int = 0
    seconds: float = 0.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MobilenetError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MobilenetError("device 'cuda' asked for, but no CUDA GPU is available; use --device cpu")
    return device


# Measured (docs/benchmarks/train_throughput.md): bf16 autocast speeds up V2 1.0 at 224 (300M mult-adds) by 1.2x
# over fp32 channels_last, but slows V1 0.25 at 96 (4M) by 1.4x: small layers are bound by the casts.
BF16_MIN_MULT_ADDS = 100_000_000


def resolve_precision(precision: str, device: torch.device, mult_adds: int | None = None) -> str:
    """``auto``: AMP fp16 on CUDA; on CPUs with native bf16 (AVX512-BF16/AMX), bf16 autocast for models of at
    least ``BF16_MIN_MULT_ADDS`` per image; else fp32."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise MobilenetError("fp16 AMP needs a CUDA GPU; use --precision bf16 or fp32 on CPU")
        return precision
    if device.type == "cuda":
        return "fp16"
    big_enough = mult_adds is None or mult_adds >= BF16_MIN_MULT_ADDS
    return "bf16" if big_enough and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


class Trainer:
    """Fit a model to ``train_dir`` (one subfolder per class), validating on ``val_dir`` or a split of it."""

    def __init__(
        self,
        config: TrainConfig,
        train_dir: str | Path,
        val_dir: str | Path | None = None,
        run_dir: str | Path = "runs/train",
        *,
        init_weights: str | Path | None = None,
        resume: bool = False,
        quiet: bool = False,
    ) -> None:
        config.validate()
        self.config = config
        self.train_dir = Path(train_dir)
        self.val_dir = Path(val_dir) if val_dir is not None else None
        self.run_dir = Path(run_dir)
        self.init_weights = Path(init_weights) if init_weights is not None else None
        self.resume = resume
        self.quiet = quiet

    # ---- set-up -------------------------------------------------------------------------------------------
    def _model_overrides(self) -> dict[str, Any]:
        options = {"dropout": self.config.dropout, "bn_momentum": self.config.bn_momentum}
        return {key: value for key, value in options.items() if value is not None}

    def _model_config(self) -> ModelConfig:
        if self.init_weights is not None:
            return read_metadata(self.init_weights)["config"].replace(**self._model_overrides())
        return config_from_name(self.config.model, **self._model_overrides())

    def _build_model(self, model_config: ModelConfig, class_names: list[str]) -> MobileNet:
        if self.init_weights is None:
            model = MobileNet(model_config.replace(num_classes=len(class_names)))
        else:
            model = load_weights(self.init_weights, **self._model_overrides())
            if model.class_names != class_names:
                model.reset_classifier(len(class_names))
        model.class_names = list(class_names)
        return model

    def _data(self, model_config: ModelConfig, world: World) -> DataBundle:
        return build_dataloaders(
            self.train_dir,
            self.val_dir,
            preprocessing=model_config.preprocessing,
            batch_size=self.config.batch_size // world.size,
            val_fraction=self.config.val_fraction,
            seed=self.config.seed,
            num_workers=self.config.num_workers,
            train_scale=tuple(self.config.train_scale),
            hflip=self.config.hflip,
            distributed=world.distributed,
        )

    # ---- the run ------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.config
        if cfg.batch_size % max(1, int(os.environ.get("WORLD_SIZE", "1"))):
            raise MobilenetError("the global batch size must be divisible by the number of processes")
        device = pick_device(cfg.device)
        world = init_world(device)
        try:
            return self._fit(device, world)
        finally:
            shutdown(world)

    def _fit(self, device: torch.device, world: World) -> TrainResult:
        cfg = self.config
        started = time.perf_counter()
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        model_config = self._model_config()
        _require_batch_norm_statistics(self.config.batch_size // world.size, model_config.resolution)
        data = self._data(model_config, world)
        self._require_usable_data(data)
        model = self._build_model(model_config, data.class_names).to(device)
        precision = resolve_precision(cfg.precision, device, cost_of_model(model).mult_adds)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and world.distributed:
            model = convert_sync_batchnorm(model, device)
        raw_model = model
        groups = parameter_groups(raw_model, cfg, HEAD_PARTS)
        optimizer = build_optimizer(groups, cfg)
        ema = ModelEma(raw_model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        train_model: nn.Module = raw_model
        if world.distributed:
            train_model = nn.parallel.DistributedDataParallel(
                raw_model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.freeze_backbone_epochs > 0,
            )
        steps_per_epoch = max(1, len(data.train_loader))
        schedule = lr_multiplier(cfg, steps_per_epoch)
        state = self._initial_state()
        if state["epoch"] > 0:
            self._check_resumable(state, data.class_names)
            self._restore(state, raw_model, optimizer, ema, scaler)
            self._say(world, f"resuming {self.run_dir} after epoch {state['epoch']}")
        if world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
        self._say(world, self._banner(raw_model, data, device, precision, world))
        writer = self._tensorboard(world)
        history: list[dict[str, Any]] = list(state["history"])
        best_top1, step = float(state["best_top1"]), int(state["step"])
        val = None
        for epoch in range(int(state["epoch"]), cfg.epochs):
            self._seed_epoch(epoch, world, data)
            frozen = epoch < cfg.freeze_backbone_epochs
            self._set_stage(raw_model, optimizer, frozen)
            train_stats, step = self._train_epoch(
                epoch, train_model, raw_model, data, optimizer, scaler, ema, schedule, step, device, precision,
                frozen, world,
            )
            eval_model = ema.module if ema is not None else raw_model
            val = self._validate(eval_model, data, device, precision, world)
            row = self._history_row(epoch, train_stats, val, optimizer)
            history.append(row)
            improved = val.top1 > best_top1
            best_top1 = max(best_top1, val.top1)
            if world.is_main:
                self._save(raw_model, eval_model, optimizer, scaler, ema, epoch + 1, step, history, best_top1,
                           improved, data)
                self._log(writer, row)
            self._say(world, self._epoch_line(row))
            barrier(world)
        if writer is not None:
            writer.close()
        if state["epoch"] >= cfg.epochs:
            self._say(world, f"{self.run_dir} already finished {cfg.epochs} epochs; nothing to do")
        return self._finish(world, history, best_top1, data, started)

    def _initial_state(self) -> dict[str, Any]:
        empty = {"epoch": 0, "step": 0, "history": [], "best_top1": -1.0}
        existing = self.run_dir / checkpoint.STATE_FILE
        if not self.resume:
            if existing.exists():
                raise MobilenetError(
                    f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out"
                )
            return empty
        state = checkpoint.load_state(self.run_dir)
        if state is None:
            return empty
        if state.get("train_config", {}).get("model") != self.config.model and self.init_weights is None:
            raise MobilenetError(
                f"cannot resume {self.run_dir}: it trains {state['train_config'].get('model')}, "
                f"not {self.config.model}"
            )
        return state

    def _require_usable_data(self, data: DataBundle) -> None:
        train, val = data.train_loader.dataset.samples, data.val_loader.dataset.samples
        if self.val_dir is not None:
            _require_usable_images(train, str(self.train_dir))
            _require_usable_images(val, str(self.val_dir))
            return
        # The whole folder first, so the message counts the files the user sees in it.
        _require_usable_images(train + val, str(self.train_dir))
        _require_usable_images(train, f"the training split of {self.train_dir}")
        _require_usable_images(val, f"the validation split of {self.train_dir}")

    def _check_resumable(self, state: dict[str, Any], class_names: list[str]) -> None:
        """Refuse to resume under other classes or optimizer settings: the saved state fixes both."""
        saved_classes = list(state.get("class_names") or class_names)
        if saved_classes != list(class_names):
            difference = _class_difference(saved_classes, class_names)
            raise MobilenetError(
                f"cannot resume {self.run_dir}: it was made with other classes ({difference}); "
                "use a new --out for this data, or resume with the original data"
            )
        saved = state.get("train_config", {})
        changed = [
            f"{name} {saved[name]!r} -> {getattr(self.config, name)!r}"
            for name in RESUME_FIXED_SETTINGS
            if name in saved and saved[name] != getattr(self.config, name)
        ]
        if changed:
            raise MobilenetError(
                f"cannot resume {self.run_dir}: it was made with different settings ({', '.join(changed)}); "
                "resume with the original settings or use a new --out"
            )

    def _restore(
        self,
        state: dict[str, Any],
        model: MobileNet,
        optimizer: torch.optim.Optimizer,
        ema: ModelEma | None,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        # _check_resumable catches the usual causes; anything else that no longer fits is the same mistake.
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if ema is not None and state.get("ema"):
                ema.load_state_dict(state["ema"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise MobilenetError(
                f"cannot resume {self.run_dir}: it was made with a different model, classes or settings "
                f"({type(exc).__name__} loading its state); resume with the original settings or use a new --out"
            ) from None

    def _seed_epoch(self, epoch: int, world: World, data: DataBundle) -> None:
        torch.manual_seed(self.config.seed * 1_000_003 + epoch * 1_009 + world.rank)
        sampler = data.train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        generator = getattr(data.train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(self.config.seed * 1_000_003 + epoch)

    def _set_stage(self, model: MobileNet, optimizer: torch.optim.Optimizer, frozen: bool) -> None:
        """Transfer learning: stage 1 trains the head only, backbone frozen with BatchNorm in eval mode."""
        for name, param in model.named_parameters():
            if not name.startswith(HEAD_PARTS):
                param.requires_grad_(not frozen)
        backbone_scale = self.config.backbone_lr_scale if self.config.freeze_backbone_epochs > 0 else 1.0
        for group in optimizer.param_groups:
            group["lr_scale"] = 1.0 if group["part"] == "head" else (0.0 if frozen else backbone_scale)

    def _train_epoch(
        self,
        epoch: int,
        train_model: nn.Module,
        raw_model: MobileNet,
        data: DataBundle,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        ema: ModelEma | None,
        schedule: Any,
        step: int,
        device: torch.device,
        precision: str,
        frozen: bool,
        world: World,
    ) -> tuple[dict[str, float], int]:
        cfg = self.config
        train_model.train()
        if frozen:
            raw_model.features.eval()
        loss_sum, correct, count, skipped = 0.0, 0, 0, 0
        started = time.perf_counter()
        bar = tqdm(
            data.train_loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=self.quiet or not world.is_main,
            leave=False,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        for batch_index, (images, labels, bad) in enumerate(bar):
            skipped += int(bad)
            if labels.numel() == 0:
                continue
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * schedule(step) * group.get("lr_scale", 1.0)
            images = images.to(device, non_blocking=True)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with autocast_context(device, precision):
                logits = train_model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
            if not math.isfinite(loss.item()):
                raise MobilenetError(
                    f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr or use --precision fp32"
                )
            optimizer.zero_grad(set_to_none=True)
            self._backward_step(loss, optimizer, scaler, raw_model)
            if ema is not None:
                ema.update(raw_model)
            step += 1
            loss_sum += loss.item() * labels.numel()
            correct += (logits.argmax(1) == labels).sum().item()
            count += labels.numel()
            if batch_index % cfg.log_interval == 0:
                rate = count * world.size / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{100 * correct / count:.1f}%",
                                img_s=f"{rate:.0f}")
        seconds = time.perf_counter() - started
        loss_sum, correct, count, skipped = all_reduce_sum(world, [loss_sum, correct, count, skipped])
        stats = {
            "loss": loss_sum / max(count, 1),
            "acc": 100.0 * correct / max(count, 1),
            "images_per_s": count / max(seconds, 1e-9),
            "skipped": skipped,
        }
        return stats, step

    def _backward_step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        model: nn.Module,
    ) -> None:
        clip = self.config.clip_grad_norm
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            return
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    def _validate(
        self, model: nn.Module, data: DataBundle, device: torch.device, precision: str, world: World
    ) -> EvalResult:
        # Every rank evaluates the whole (small) validation set: no padding duplicates, identical numbers.
        return evaluate_model(
            model, data.val_loader, data.num_classes, device, precision, channels_last=self.config.channels_last
        )

    def _history_row(
        self, epoch: int, train: dict[str, float], val: EvalResult, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        head_lr = max(group["lr"] for group in optimizer.param_groups)
        return {
            "epoch": epoch + 1,
            "lr": head_lr,
            "train_loss": round(train["loss"], 6),
            "train_acc": round(train["acc"], 4),
            "val_loss": round(val.loss, 6),
            "val_top1": round(val.top1, 4),
            "val_top5": round(val.top5, 4),
            "images_per_s": round(train["images_per_s"], 1),
            "skipped": int(train["skipped"]) + val.skipped,
        }

    def _save(
        self,
        raw_model: MobileNet,
        eval_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        ema: ModelEma | None,
        epoch: int,
        step: int,
        history: list[dict[str, Any]],
        best_top1: float,
        improved: bool,
        data: DataBundle,
    ) -> None:
        state = {
            "epoch": epoch,
            "step": step,
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else {},
            "scaler": scaler.state_dict() if scaler is not None else {},
            "history": history,
            "best_top1": best_top1,
            "train_config": self.config.to_dict(),
            "class_names": data.class_names,
        }
        checkpoint.save_state(self.run_dir, state)
        export_model = _plain_copy(eval_model, raw_model)
        extra = {"epoch": epoch, "val_top1": history[-1]["val_top1"], "recipe": self.config.recipe}
        save_weights(export_model, self.run_dir / checkpoint.LAST_WEIGHTS, class_names=data.class_names, extra=extra)
        if improved:
            save_weights(
                export_model, self.run_dir / checkpoint.BEST_WEIGHTS, class_names=data.class_names, extra=extra
            )
        checkpoint.write_history(self.run_dir, json_safe(history))

    def _finish(
        self, world: World, history: list[dict[str, Any]], best_top1: float, data: DataBundle, started: float
    ) -> TrainResult:
        last = history[-1] if history else {}
        skipped = len(data.skipped_files) + (int(last.get("skipped", 0)) if last else 0)
        result = TrainResult(
            run_dir=self.run_dir,
            weights=self.run_dir / checkpoint.BEST_WEIGHTS,
            class_names=data.class_names,
            best_top1=best_top1,
            final_top1=float(last.get("val_top1", float("nan"))),
            final_top5=float(last.get("val_top5", float("nan"))),
            history=history,
            skipped_files=skipped,
            seconds=time.perf_counter() - started,
        )
        if world.is_main and history:
            from mobilenet.training.plots import plot_history

            plot_history(history, self.run_dir / "curves.png")
            summary = {
                "best_val_top1": best_top1 if best_top1 >= 0 else None,
                "final_val_top1": result.final_top1,
                "final_val_top5": result.final_top5,
                "epochs": len(history),
                "num_train": data.num_train,
                "num_val": data.num_val,
                "classes": data.class_names,
                "skipped_files": skipped,
                "seconds": round(result.seconds, 1),
            }
            atomic_write_text(self.run_dir / "summary.json", json.dumps(json_safe(summary), indent=2))
            self._say(world, f"best val top-1 {best_top1:.2f}%; skipped files: {skipped}; run folder: {self.run_dir}")
        return result

    # ---- reporting ----------------------------------------------------------------------------------------
    def _say(self, world: World, message: str) -> None:
        if world.is_main and not self.quiet:
            tqdm.write(message)

    def _banner(self, model: MobileNet, data: DataBundle, device: torch.device, precision: str, world: World) -> str:
        params = sum(p.numel() for p in model.parameters())
        return (
            f"training {self.config.model if self.init_weights is None else self.init_weights} "
            f"({params:,} params) on {data.num_train} images, validating on {data.num_val}, "
            f"{data.num_classes} classes; {device.type} x{world.size}, {precision}, "
            f"batch {self.config.batch_size}, recipe {self.config.recipe}"
        )

    @staticmethod
    def _epoch_line(row: dict[str, Any]) -> str:
        return (
            f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4f}  train {row['train_acc']:5.1f}%  "
            f"val top-1 {row['val_top1']:5.1f}%  top-5 {row['val_top5']:5.1f}%  lr {row['lr']:.2e}  "
            f"{row['images_per_s']:.0f} img/s"
        )

    def _tensorboard(self, world: World) -> Any:
        if not world.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    @staticmethod
    def _log(writer: Any, row: dict[str, Any]) -> None:
        if writer is None:
            return
        for key, value in row.items():
            if key != "epoch":
                writer.add_scalar(key, value, row["epoch"])


def _require_usable_images(samples: list[tuple[Path, int]], source: str) -> None:
    """Fail before training when no file decodes: the run would otherwise "finish" with NaN metrics.

    Stops at the first readable image, so a healthy dataset costs one decode."""
    for path, _ in samples:
        try:
            load_rgb(path)
            return
        except ImageDecodeError:
            continue
    first = f" (first: {samples[0][0]})" if samples else ""
    raise MobilenetError(
        f"no usable images in {source}: all {len(samples)} image files are unreadable and would be skipped{first}; "
        "replace or delete the corrupt files"
    )


def _require_batch_norm_statistics(batch_size: int, resolution: int) -> None:
    """Training-mode BatchNorm needs two values per channel; the stride-32 maps have ceil(R/32)^2 per image."""
    if batch_size * math.ceil(resolution / 32) ** 2 < 2:
        raise MobilenetError(
            f"a batch of {batch_size} image(s) at {resolution} px leaves BatchNorm one value per channel at stride "
            "32; use --batch-size 2 or more (per process)"
        )


def _class_difference(saved: list[str], current: list[str]) -> str:
    missing = sorted(set(saved) - set(current))
    extra = sorted(set(current) - set(saved))
    if not missing and not extra:
        return "same names in a different order"
    return f"{len(saved)} saved, {len(current)} now; missing now: {_few(missing)}, new: {_few(extra)}"


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _plain_copy(model: nn.Module, template: MobileNet) -> MobileNet:
    """A contiguous-layout MobileNet holding ``model``'s weights (EMA copies and SyncBN are converted back)."""
    plain = MobileNet(template.config)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    plain.load_state_dict(state)
    plain.class_names = template.class_names
    return plain
