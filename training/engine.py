"""The training run: set-up, one iteration of Eq. 10, periodic evaluation; its checkpoints and resume are
`run_state.RunState`'s."""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from jal_deploy.atomic import stale_temp_files, write_text
from jal_deploy.machine import emulated_bf16

from . import checkpoints as ckpt
from .config import TrainConfig
from .distributed import DistEnv, average_gradients, barrier, broadcast_flag, init_distributed
from .evaluate import evaluate, target_decoders
from .losses import adv_loss, dis_loss, discriminator_maps, rectified_seg_losses, seg_loss, upsample
from .models import Discriminator, build_model
from .models.norm import estimate_statistics
from .optim import parameter_groups, sgd_param_groups
from .run_state import RunState, TrainingDiverged, TrainingError
from .runlog import RunLog
from .streams import build_streams

INIT_HELP = ("The paper presets start from ImageNet/COCO weights: the AdaptSegNet repository links "
             "DeepLab_resnet_pretrained_init-f81d91e8.pth (ResNet-101) and torchvision publishes "
             "vgg16-397923af.pth (VGG16). Pass it with --set model.init=PATH.")


def poly_lr(base: float, iteration: int, max_iter: int, power: float) -> float:
    return base * (1.0 - min(iteration, max_iter) / max_iter) ** power


def _set_requires_grad(modules, flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


class Trainer(RunState):
    def __init__(self, cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 resume_from: str | Path | None = None):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        flags = cfg.flags
        self.adversarial, self.jal, self.labels_from, self.self_training = (
            flags.adversarial, flags.jal, flags.labels, flags.self_training)
        wtm = flags.wtm
        run = cfg.run
        if run.threads:
            torch.set_num_threads(run.threads)
        use_cuda = run.device == "cuda" or (run.device == "auto" and torch.cuda.is_available())
        if run.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("run.device=cuda but no CUDA device is visible to torch")
        self.env: DistEnv = init_distributed("cuda" if use_cuda else "cpu")
        self.device = torch.device(f"cuda:{self.env.local_rank}" if use_cuda else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if run.amp == "fp16" and self.device.type != "cuda":
            raise TrainingError("run.amp=fp16 needs a CUDA device; on CPU use run.amp=bf16 (fast on CPUs with "
                                "AMX or AVX-512 BF16) or run.amp=none")
        if (message := emulated_bf16(run.amp, self.device.type)) and self.env.is_main:
            warnings.warn(message, stacklevel=2)
        torch.manual_seed(run.seed)

        m = cfg.model
        self.model = build_model(m.arch, m.num_classes, width=m.width, aspp_branches=m.aspp_branches, wtm=wtm,
                                 bn_mode=m.bn_mode, wtm_kernel_grad=m.wtm_kernel_grad).to(self.device)
        if run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        names = ("d1", "d2", *(("d_wtm",) if wtm != "none" else ())) if self.adversarial else ()
        self.discs = {name: Discriminator(m.num_classes, m.ndf).to(self.device) for name in names}
        groups = parameter_groups(self.model)
        o = cfg.optim
        self.opt_g = torch.optim.SGD(sgd_param_groups(self.model, o.lr), lr=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay)
        self.opt_wtm = (torch.optim.SGD(groups["wtm"], lr=o.lr_wtm, momentum=o.momentum_wtm, weight_decay=0.0)
                        if groups["wtm"] else None)
        self.opt_d = {n: torch.optim.Adam(d.parameters(), lr=o.lr_d, betas=o.betas_d) for n, d in self.discs.items()}
        self.scaler = torch.amp.GradScaler("cuda", enabled=run.amp == "fp16")
        self.iteration, self.best = 0, {"miou": -1.0, "iteration": 0}
        # wall seconds of the whole run across resumes (training, evaluation, saving), kept in every checkpoint
        self._seconds_before, self._clock = 0.0, time.perf_counter()

        if resume or resume_from:
            self._resume(resume_from)
        elif m.init:
            self._load_init()
        elif m.init_required:
            raise TrainingError(f"preset {cfg.preset!r} needs an init checkpoint. {INIT_HELP}")
        self.ddp_model = self.model
        if self.env.enabled:
            if self.device.type == "cuda" and m.bn_mode == "train":  # batch statistics across all GPUs
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        self._build_data()

    # ----- set-up -------------------------------------------------------------------------------------
    def _load_init(self) -> None:
        m = self.cfg.model
        try:
            report = ckpt.load_weights(self.model, m.init, fmt=m.init_fmt)
        except ckpt.CheckpointError as e:
            raise TrainingError(f"model.init: {e}. {INIT_HELP if m.init_required else ''}".strip()) from None
        if self.env.is_main:
            tqdm.write(str(report))
        if m.init_required and not report.backbone_complete:
            raise TrainingError(f"model.init {m.init} did not provide the whole backbone "
                                f"({len(report.missing)} tensors missing); refusing to train. {INIT_HELP}")

    def _build_data(self) -> None:
        d = self.cfg.data
        if not d.target_root or not (d.source_root or self.labels_from == "target"):
            raise TrainingError("data.source_root and data.target_root are required "
                                "(--set data.source_root=PATH data.target_root=PATH)")
        streams = build_streams(self.cfg, self.device.type, self.env, start=self.iteration * d.batch_size)
        self.source_iter, self.target_iter = streams.labelled, streams.target
        self.val_loader, self.bn_loader, self._bn_at = streams.val, streams.bn, -1

    def _autocast(self):
        amp = self.cfg.run.amp
        if amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if self.cfg.run.channels_last and t.dim() == 4 else t

    # ----- one iteration (Eq. 10) ---------------------------------------------------------------------
    def _check(self, terms: dict) -> None:
        for name, value in terms.items():
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss {name} is {value} at iteration {self.iteration + 1}")

    def _backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def _set_lrs(self, it: int) -> dict:
        o = self.cfg.optim
        lr = poly_lr(o.lr, it, o.iters, o.power)
        for g in self.opt_g.param_groups:
            g["lr"] = lr * g["lr_mult"]
        lr_d, lr_wtm = poly_lr(o.lr_d, it, o.iters, o.power), poly_lr(o.lr_wtm, it, o.iters, o.power)
        for opt in self.opt_d.values():
            for g in opt.param_groups:
                g["lr"] = lr_d
        if self.opt_wtm:
            for g in self.opt_wtm.param_groups:
                g["lr"] = lr_wtm
        return {"lr": lr, "lr_d": lr_d if self.adversarial else None, "lr_wtm": lr_wtm if self.opt_wtm else None}

    def _pseudo_label_terms(self, out: dict, labels: torch.Tensor) -> tuple[dict, dict]:
        """Self-training: Eq. 1 on target images with their pseudo labels, through the target decoders (Dec^T
        where the model has a WTM: the decoder that is deployed on target images); with method.pseudo_rectify each
        pixel's loss weighted by how much the two decoders agree on it."""
        mth = self.cfg.method
        low, high = target_decoders(out)
        lam = mth.lambda_seg_target
        weights = {"seg1_tgt": lam * mth.lambda_seg1, "seg2_tgt": lam * mth.lambda_seg2}
        if mth.pseudo_rectify:
            return rectified_seg_losses(low.float(), high.float(), labels), {**weights, "kl_tgt": lam}
        return {"seg1_tgt": seg_loss(low.float(), labels), "seg2_tgt": seg_loss(high.float(), labels)}, weights

    def _adversarial_terms(self, pt: dict) -> tuple[dict, dict]:
        """Eqs. 3-5 and 9 on the target softmax maps `pt`: each term and its weight."""
        mth = self.cfg.method
        adv = {"adv1": adv_loss(self.discs["d1"], pt["low"]), "adv2": adv_loss(self.discs["d2"], pt["high"])}
        weights = {"adv1": mth.lambda_adv1, "adv2": mth.lambda_adv2}
        if self.jal:  # Eq. 5: the high-level target map must also fool D1 (trained on low maps only)
            adv["jal"], weights["jal"] = adv_loss(self.discs["d1"], pt["high"]), mth.lambda_jal
        for key, out, lam in (("adv_wtm1", "low_t", mth.lambda_adv_wtm1), ("adv_wtm2", "high_t", mth.lambda_adv_wtm2)):
            if out in pt:  # Eq. 9 through D_wtm
                adv[key], weights[key] = adv_loss(self.discs["d_wtm"], pt[out]), lam
        return adv, weights

    def train_step(self) -> dict:
        mth, it = self.cfg.method, self.iteration
        row = {"iteration": it + 1, **self._set_lrs(it)}
        for opt in (self.opt_g, self.opt_wtm, *self.opt_d.values()):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        discs = list(self.discs.values())
        _set_requires_grad(discs, False)
        model = self.ddp_model

        batch = next(self.source_iter)
        xs, ys = self._to_device(batch["image"]), batch["label"].to(self.device)
        with self._autocast():
            src = model(xs)
            terms = {"seg1": seg_loss(src["low"].float(), ys), "seg2": seg_loss(src["high"].float(), ys)}
        self._check({k: v.item() for k, v in terms.items()})
        self._backward(mth.lambda_seg1 * terms["seg1"] + mth.lambda_seg2 * terms["seg2"])

        if self.target_iter is not None:
            batch_t = next(self.target_iter)
            xt = self._to_device(batch_t["image"])
            with self._autocast():
                tgt = model(xt)
                losses, weights = {}, {}
                if self.self_training:
                    losses, weights = self._pseudo_label_terms(tgt, batch_t["label"].to(self.device))
                if self.adversarial:
                    pt = {k: discriminator_maps(F.softmax(upsample(v.float(), xt.shape[-2:]), dim=1), mth.d_input)
                          for k, v in tgt.items()}
                    adv, adv_weights = self._adversarial_terms(pt)
                    losses.update(adv)
                    weights.update(adv_weights)
            self._check({k: v.item() for k, v in losses.items()})
            self._backward(sum(weights[k] * v for k, v in losses.items()))
            terms.update(losses)

        if self.adversarial:
            _set_requires_grad(discs, True)
            ps = {k: discriminator_maps(F.softmax(upsample(v.detach().float(), xs.shape[-2:]), dim=1), mth.d_input)
                  for k, v in src.items()}
            pairs = {"d1": "low", "d2": "high"}
            if "d_wtm" in self.discs:  # Eq. 8: D_wtm learns from the low-level transferred maps
                pairs["d_wtm"] = "low_t" if "low_t" in pt else "high_t"
            for name, key in pairs.items():
                with self._autocast():
                    loss, stats = dis_loss(self.discs[name], ps[key], pt[key].detach())
                self._check({name: loss.item()})
                self._backward(loss)
                terms[name] = loss
                row.update({f"{name}_{k}": v for k, v in stats.items()})
                average_gradients(self.discs[name], self.env)

        self.scaler.step(self.opt_g)
        if self.opt_wtm is not None and self.target_iter is not None:  # only target images reach the WTMs
            self.scaler.step(self.opt_wtm)
        for opt in self.opt_d.values():
            self.scaler.step(opt)
        self.scaler.update()
        self.iteration += 1
        row.update({k: v.item() for k, v in terms.items()})
        return row

    # ----- target statistics ---------------------------------------------------------------------------
    def _target_statistics(self) -> None:
        """model.target_bn_frames (AdaBN): with bn_mode=train each batch is normalised in its own domain, but the
        running averages that evaluation and export use mix both; re-estimating them on unlabelled target frames
        gives the deployed network the normalisation its target batches had in training."""
        if self.bn_loader is not None and self._bn_at != self.iteration:
            estimate_statistics(self.model, (self._to_device(b["image"]) for b in self.bn_loader))
            self._bn_at = self.iteration

    @property
    def seconds(self) -> float:
        """Wall seconds this run has cost up to now, its earlier processes included (up to their last save)."""
        return self._seconds_before + time.perf_counter() - self._clock

    # ----- the run ------------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        d = self.cfg.data
        if self.val_loader is None:
            raise TrainingError("run.eval_every=0 builds no val loader: nothing to evaluate on")
        self._target_statistics()
        return evaluate(self.model, self.val_loader, d.protocol, d.eval_protocols, self.device,
                        autocast=self._autocast if self.cfg.run.amp != "none" else None)

    def _evaluate_and_select(self, log: RunLog) -> dict:
        results = self.evaluate()
        log.log_eval(self.iteration, results)
        first = results[self.cfg.data.eval_protocols[0]]["miou"]
        if first > self.best["miou"]:
            self.best = {"miou": first, "iteration": self.iteration}
            self.save("best.pth")
        return results

    def run(self) -> dict:
        cfg, last = self.cfg, self.cfg.last_iteration
        if self.iteration >= last:
            later_stop = (f"a later stop inside the schedule (`--stop-at N`, {self.iteration} < N <= "
                          f"{cfg.optim.iters}) or " if self.iteration < cfg.optim.iters else "")
            raise TrainingError(
                f"the run in {self.out} already reached iteration {self.iteration} (stop at {last}). To go further, "
                f"resume with {later_stop}a longer schedule (`--iters N`; the poly learning rate then runs to N)")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.env.is_main:
            for stale in stale_temp_files(self.out / "checkpoints") + stale_temp_files(self.out):
                stale.unlink(missing_ok=True)  # left by a kill during an atomic write
            write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        log = RunLog(self.out, self.iteration, cfg.run.tensorboard) if self.env.is_main else None
        stop = {"requested": False}

        def on_sigint(signum, frame):  # finish the iteration, save, exit; a second Ctrl-C aborts at once
            if stop["requested"]:
                raise KeyboardInterrupt
            stop["requested"] = True

        previous = signal.signal(signal.SIGINT, on_sigint)
        self._clock = time.perf_counter()  # the clock runs from here: setting up the Trainer is not the run's
        bar = tqdm(total=last, initial=self.iteration, desc=f"{cfg.method.name}", dynamic_ncols=True,
                   disable=not (self.progress and self.env.is_main))
        results, status = {}, "finished"

        def due(every: int) -> bool:
            return self.iteration % every == 0 or self.iteration == last

        try:
            while self.iteration < last:
                t0 = time.perf_counter()
                row = self.train_step()
                row["sec_per_iter"] = time.perf_counter() - t0
                bar.update(1)
                if log and due(cfg.run.log_every):
                    log.log_train(row)
                    bar.set_postfix({k: f"{row[k]:.3g}" for k in ("seg2", "seg2_tgt", "adv2", "jal", "adv_wtm2", "d2")
                                     if row.get(k) is not None})
                if self.env.is_main and cfg.run.eval_every and due(cfg.run.eval_every):
                    results = self._evaluate_and_select(log)
                    bar.write(f"iter {self.iteration}: " + ", ".join(
                        f"mIoU{p} {100 * r['miou']:.2f}" for p, r in results.items()))
                if due(cfg.run.save_every):
                    self._snapshot()
                barrier(self.env)
                if broadcast_flag(stop["requested"], self.env, self.device) and self.iteration < last:
                    self._snapshot()
                    status = "interrupted"
                    break
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e}: stopping; the last good checkpoint is kept in "
                                   f"{self.out / 'checkpoints'} (lower the learning rate or loss weights)") from None
        finally:
            signal.signal(signal.SIGINT, previous)
            bar.close()
            if log:
                log.close()
        return {"status": status, "iteration": self.iteration, "best": self.best, "last_eval": results,
                "out": str(self.out), "seconds": self.seconds}
